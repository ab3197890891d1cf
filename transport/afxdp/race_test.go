//go:build race

package afxdp

// raceEnabled reports a -race build, where sync.Pool drops a quarter of what is put back (the
// write combiner pools its requests), so steady-state allocation counts are not meaningful.
const raceEnabled = true
