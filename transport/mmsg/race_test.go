//go:build linux && race

package mmsg

// raceEnabled reports a -race build, where sync.Pool drops a quarter of what is put back and
// steady-state allocation counts are therefore not meaningful.
const raceEnabled = true
