//go:build !race

package afxdp

// raceEnabled reports a -race build (see race_test.go).
const raceEnabled = false
