//go:build !linux

package measure

// ProcessUsage is only implemented on Linux; elsewhere it returns ErrUnsupported.
func ProcessUsage() (Usage, error) { return Usage{}, ErrUnsupported }
