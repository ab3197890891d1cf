//go:build linux && !race

package mmsg

// raceEnabled reports a -race build (see race_test.go).
const raceEnabled = false
