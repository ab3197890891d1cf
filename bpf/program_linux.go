package bpf

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Program is a loaded XDP redirect program with its XSKMAP and counters. Its methods are safe for
// concurrent use.
type Program struct {
	mu       sync.Mutex
	prog     *ebpf.Program
	xsks     *ebpf.Map
	counters *ebpf.Map
	queues   int
	link     link.Link // nil until Attach
	closed   bool
}

// Load validates cfg and loads the program and its maps into the kernel. It needs CAP_BPF (or
// root). The program is not attached to any interface until [Program.Attach]. An invalid cfg
// yields a *[ConfigError]; a kernel without BPF yields an error matching ebpf.ErrNotSupported.
func Load(cfg Config) (*Program, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	spec := &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			xsksName: {
				Name:       xsksName,
				Type:       ebpf.XSKMap,
				KeySize:    4,
				ValueSize:  4,
				MaxEntries: uint32(cfg.QueueCount),
			},
			countName: {
				Name:       countName,
				Type:       ebpf.PerCPUArray,
				KeySize:    4,
				ValueSize:  8,
				MaxEntries: uint32(numReasons),
			},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			programName: {
				Name:         programName,
				Type:         ebpf.XDP,
				License:      "Dual MIT/GPL",
				Instructions: instructions(cfg.Ports),
			},
		},
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			// The full verifier log is the only useful diagnostic; %+v prints all of it.
			return nil, fmt.Errorf("bpf: load XDP program (ports %v, %d queues): %w\n%+v", cfg.Ports, cfg.QueueCount, err, ve)
		}
		return nil, fmt.Errorf("bpf: load XDP program (ports %v, %d queues): %w", cfg.Ports, cfg.QueueCount, err)
	}
	return &Program{
		prog:     coll.Programs[programName],
		xsks:     coll.Maps[xsksName],
		counters: coll.Maps[countName],
		queues:   cfg.QueueCount,
	}, nil
}

// Attach attaches the program to the interface with index ifindex through a BPF link, which the
// kernel removes when the process exits, and returns the mode in effect: with [AttachAuto],
// driver mode if the driver accepts it, else generic mode. A program attaches to one interface
// at most ([ErrAttached]); Close detaches it.
//
// The interface index is resolved in the calling thread's network namespace.
func (p *Program) Attach(ifindex int, mode AttachMode) (AttachMode, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return mode, fmt.Errorf("bpf: attach to %s: %w", ifaceName(ifindex), ErrClosed)
	}
	if p.link != nil {
		return mode, fmt.Errorf("bpf: attach to %s: %w", ifaceName(ifindex), ErrAttached)
	}
	if ifindex < 1 {
		return mode, fmt.Errorf("bpf: attach: invalid interface index %d", ifindex)
	}
	switch mode {
	case AttachDriver, AttachGeneric:
		if err := p.attach(ifindex, mode); err != nil {
			return mode, err
		}
		return mode, nil
	case AttachAuto:
		errDriver := p.attach(ifindex, AttachDriver)
		if errDriver == nil {
			return AttachDriver, nil
		}
		if errGeneric := p.attach(ifindex, AttachGeneric); errGeneric != nil {
			return AttachAuto, errors.Join(errDriver, errGeneric)
		}
		return AttachGeneric, nil
	default:
		return mode, fmt.Errorf("bpf: attach to %s: invalid mode %v", ifaceName(ifindex), mode)
	}
}

// attach attaches in one mode; p.mu is held.
func (p *Program) attach(ifindex int, mode AttachMode) error {
	flags := link.XDPGenericMode
	if mode == AttachDriver {
		flags = link.XDPDriverMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: p.prog, Interface: ifindex, Flags: flags})
	if err != nil {
		return fmt.Errorf("bpf: attach XDP to %s in %v mode: %w", ifaceName(ifindex), mode, err)
	}
	p.link = l
	return nil
}

// ifaceName describes an interface for error messages, with its name when it can be found.
func ifaceName(ifindex int) string {
	if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
		return fmt.Sprintf("%s (ifindex %d)", ifi.Name, ifindex)
	}
	return fmt.Sprintf("ifindex %d", ifindex)
}

// SetSocket puts the AF_XDP socket fd in the XSKMAP slot of RX queue queue, replacing any
// previous one: from then on, frames matched on that queue go to the socket. The socket must
// already be bound to that queue of the interface the program is attached to (the kernel refuses
// an unbound socket). The map holds its own reference to the socket; DeleteSocket or Close
// releases it.
func (p *Program) SetSocket(queue, fd int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkQueue("set socket", queue); err != nil {
		return err
	}
	if fd < 0 {
		return fmt.Errorf("bpf: set socket for queue %d: invalid fd %d", queue, fd)
	}
	if err := p.xsks.Update(uint32(queue), uint32(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: set socket for queue %d (fd %d): %w", queue, fd, err)
	}
	return nil
}

// DeleteSocket empties the XSKMAP slot of RX queue queue: frames matched on that queue go to the
// kernel again (counted in NoSocket). Emptying an empty slot is not an error.
func (p *Program) DeleteSocket(queue int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkQueue("delete socket", queue); err != nil {
		return err
	}
	if err := p.xsks.Delete(uint32(queue)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("bpf: delete socket for queue %d: %w", queue, err)
	}
	return nil
}

// checkQueue validates queue for op; p.mu is held.
func (p *Program) checkQueue(op string, queue int) error {
	if p.closed {
		return fmt.Errorf("bpf: %s for queue %d: %w", op, queue, ErrClosed)
	}
	if queue < 0 || queue >= p.queues {
		return fmt.Errorf("bpf: %s for queue %d (QueueCount %d): %w", op, queue, p.queues, ErrQueueRange)
	}
	return nil
}

// Counters returns the per-reason counts since Load, summed over all CPUs.
func (p *Program) Counters() (Counters, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var c Counters
	if p.closed {
		return c, fmt.Errorf("bpf: read counters: %w", ErrClosed)
	}
	var perCPU []uint64
	for r := range numReasons {
		if err := p.counters.Lookup(uint32(r), &perCPU); err != nil {
			return Counters{}, fmt.Errorf("bpf: read counter %d: %w", r, err)
		}
		f := c.field(r)
		for _, v := range perCPU {
			*f += v
		}
	}
	return c, nil
}

// Close detaches the program if it is attached and releases the program and its maps (and with
// them the XSKMAP's references to sockets). A second Close returns nil.
func (p *Program) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	if p.link != nil {
		if err := p.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("bpf: detach XDP link: %w", err))
		}
		p.link = nil
	}
	if err := p.prog.Close(); err != nil {
		errs = append(errs, fmt.Errorf("bpf: close program: %w", err))
	}
	if err := p.xsks.Close(); err != nil {
		errs = append(errs, fmt.Errorf("bpf: close XSKMAP: %w", err))
	}
	if err := p.counters.Close(); err != nil {
		errs = append(errs, fmt.Errorf("bpf: close counters map: %w", err))
	}
	return errors.Join(errs...)
}
