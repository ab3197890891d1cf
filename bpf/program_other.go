//go:build !linux

package bpf

// Program is a loaded XDP redirect program. XDP exists only on Linux: elsewhere Load always
// fails with ErrUnsupported, so no Program is ever returned.
type Program struct{}

// Load validates cfg and fails with ErrUnsupported: XDP exists only on Linux.
func Load(cfg Config) (*Program, error) {
	if _, err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

// Attach fails with ErrUnsupported.
func (p *Program) Attach(ifindex int, mode AttachMode) (AttachMode, error) {
	return mode, ErrUnsupported
}

// SetSocket fails with ErrUnsupported.
func (p *Program) SetSocket(queue, fd int) error { return ErrUnsupported }

// DeleteSocket fails with ErrUnsupported.
func (p *Program) DeleteSocket(queue int) error { return ErrUnsupported }

// Counters fails with ErrUnsupported.
func (p *Program) Counters() (Counters, error) { return Counters{}, ErrUnsupported }

// Close does nothing.
func (p *Program) Close() error { return nil }
