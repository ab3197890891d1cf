package bpf

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFrames runs the program with BPF_PROG_TEST_RUN on one crafted frame per case and checks the
// action and which counter moved.
//
// The XSKMAP is empty here, so bpf_redirect_map returns its XDP_PASS fallback and every frame,
// redirected or not, ends in XDP_PASS: the counters tell the redirect path (RedirectV4 or
// RedirectV6, plus NoSocket) from the pass reasons. TestTraffic puts real AF_XDP sockets in the
// map and sees XDP_REDIRECT. Frames shorter than 14 bytes are refused by the kernel's test run
// (see refusedShort); if a kernel accepts them, they must count as malformed.
func TestFrames(t *testing.T) {
	p := load(t, Config{Ports: []uint16{portA, portB}})
	for _, tc := range frameCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			before := counters(t, p)
			action, err := run(p.prog, tc.frame, 0, 0)
			if refusedShort(tc.frame, err) {
				return
			}
			if err != nil {
				t.Fatalf("run on %d-byte frame: %v", len(tc.frame), err)
			}
			if action != xdpPass {
				t.Errorf("action = %d, want XDP_PASS (%d)", action, xdpPass)
			}
			if got := counters(t, p).Sub(before); got != tc.want {
				t.Errorf("counter delta = %+v\nwant            %+v", got, tc.want)
			}
		})
	}
}

// TestPortLimits loads the largest program (MaxPorts ports, MaxQueues queues) and checks that
// the first and last ports are redirected and a neighbouring port is not.
func TestPortLimits(t *testing.T) {
	ports := make([]uint16, MaxPorts)
	for i := range ports {
		ports[i] = uint16(20000 + 2*i)
	}
	p := load(t, Config{Ports: ports, QueueCount: MaxQueues})
	for _, tc := range []struct {
		port uint16
		want Counters
	}{
		{ports[0], wantRedirectV4},
		{ports[MaxPorts-1], wantRedirectV4},
		{ports[MaxPorts-1] + 1, wantOtherPort},
		{65535, wantOtherPort},
	} {
		before := counters(t, p)
		if _, err := run(p.prog, udp4(t, tc.port, nil), 0, 0); err != nil {
			t.Fatalf("run: %v", err)
		}
		if got := counters(t, p).Sub(before); got != tc.want {
			t.Errorf("port %d: counter delta = %+v, want %+v", tc.port, got, tc.want)
		}
	}
}

// TestLoadInvalidConfig checks that Load validates before touching the kernel.
func TestLoadInvalidConfig(t *testing.T) {
	p, err := Load(Config{Ports: []uint16{0}})
	var ce *ConfigError
	if p != nil || !errors.As(err, &ce) || ce.Field != "Ports[0]" {
		t.Fatalf("Load(port 0) = %v, %v; want a *ConfigError for Ports[0]", p, err)
	}
}

// TestCounterFields checks that every counter index maps to its own Counters field and that
// together they cover every field.
func TestCounterFields(t *testing.T) {
	var c Counters
	seen := map[*uint64]reason{}
	for r := range numReasons {
		f := c.field(r)
		if prev, dup := seen[f]; dup {
			t.Errorf("reasons %d and %d share a field", prev, r)
		}
		seen[f] = r
	}
	if n := reflect.TypeOf(c).NumField(); len(seen) != n {
		t.Errorf("%d reasons map to fields, Counters has %d fields", len(seen), n)
	}
}

// TestSocketErrors checks the XSKMAP argument checks and that the kernel's refusal of a socket
// that is not AF_XDP comes back wrapped.
func TestSocketErrors(t *testing.T) {
	p := load(t, Config{Ports: []uint16{portA}, QueueCount: 2})
	for _, q := range []int{-1, 2, 1 << 20} {
		if err := p.SetSocket(q, 0); !errors.Is(err, ErrQueueRange) {
			t.Errorf("SetSocket(%d) = %v, want ErrQueueRange", q, err)
		}
		if err := p.DeleteSocket(q); !errors.Is(err, ErrQueueRange) {
			t.Errorf("DeleteSocket(%d) = %v, want ErrQueueRange", q, err)
		}
	}
	if err := p.SetSocket(0, -1); err == nil {
		t.Error("SetSocket(0, -1) succeeded")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := p.SetSocket(1, fd); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("SetSocket(1, UDP socket) = %v, want EOPNOTSUPP", err)
	}
	if err := p.DeleteSocket(1); err != nil {
		t.Errorf("DeleteSocket of an empty slot: %v", err)
	}
}

// TestClosed checks that every method fails with ErrClosed after Close, and that Close is
// idempotent.
func TestClosed(t *testing.T) {
	p := load(t, Config{Ports: []uint16{portA}})
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := p.Attach(1, AttachGeneric); !errors.Is(err, ErrClosed) {
		t.Errorf("Attach after Close = %v, want ErrClosed", err)
	}
	if err := p.SetSocket(0, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("SetSocket after Close = %v, want ErrClosed", err)
	}
	if err := p.DeleteSocket(0); !errors.Is(err, ErrClosed) {
		t.Errorf("DeleteSocket after Close = %v, want ErrClosed", err)
	}
	if _, err := p.Counters(); !errors.Is(err, ErrClosed) {
		t.Errorf("Counters after Close = %v, want ErrClosed", err)
	}
}

// TestConcurrentClose reads counters and edits the XSKMAP from several goroutines while the
// program is closed: every call either works or fails with ErrClosed (run with -race).
func TestConcurrentClose(t *testing.T) {
	p := load(t, Config{Ports: []uint16{portA}})
	errc := make(chan error, 4)
	for g := range cap(errc) {
		go func() {
			for range 100000 {
				var err error
				if g%2 == 0 {
					_, err = p.Counters()
				} else {
					err = p.DeleteSocket(0)
				}
				if err != nil {
					if errors.Is(err, ErrClosed) {
						err = nil
					}
					errc <- err
					return
				}
			}
			errc <- errors.New("100000 calls and the program was never closed")
		}()
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range cap(errc) {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// FuzzProgram runs the program on arbitrary frames: the run never fails, the action is XDP_PASS
// or XDP_REDIRECT, and each run is counted under exactly one reason.
func FuzzProgram(f *testing.F) {
	for _, tc := range frameCases(f) {
		f.Add(tc.frame)
	}
	p := load(f, Config{Ports: []uint16{portA, portB}})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > 1514 {
			frame = frame[:1514] // BPF_PROG_TEST_RUN caps linear data near a page
		}
		before := counters(t, p)
		action, err := run(p.prog, frame, 0, 0)
		if refusedShort(frame, err) {
			return
		}
		if err != nil {
			t.Fatalf("run on %d-byte frame: %v", len(frame), err)
		}
		if action != xdpPass && action != xdpRedirect {
			t.Fatalf("action = %d, want XDP_PASS or XDP_REDIRECT", action)
		}
		d := counters(t, p).Sub(before)
		if d.Total() != 1 {
			t.Fatalf("counter delta %+v counts %d frames, want 1", d, d.Total())
		}
		if d.NoSocket != d.RedirectV4+d.RedirectV6 {
			t.Fatalf("counter delta %+v: NoSocket differs from redirects with an empty XSKMAP", d)
		}
	})
}

// BenchmarkProgram measures the program's own run time per frame, as the kernel's
// BPF_PROG_TEST_RUN reports it over perCall repetitions, for a redirected frame and the main pass
// paths. ns/op is suppressed: on 6.18 a repeated test run costs a fixed ~20 ms of wall time
// whatever the count, which says nothing about the program.
func BenchmarkProgram(b *testing.B) {
	p := load(b, Config{Ports: []uint16{portA, portB}})
	cases := map[string]bool{"ipv4 udp to port B": true, "ipv6 udp to port B": true, "ipv4 udp other port": true, "arp request": true, "ipv4 tcp to port": true}
	for _, tc := range frameCases(b) {
		if !cases[tc.name] {
			continue
		}
		b.Run(tc.name, func(b *testing.B) {
			const perCall = 100000
			var total time.Duration
			for b.Loop() {
				_, perRun, err := p.prog.Benchmark(tc.frame, perCall, nil)
				if err != nil {
					b.Fatalf("run: %v", err)
				}
				total += perRun * perCall
			}
			pkts := float64(b.N) * perCall
			b.ReportMetric(float64(total.Nanoseconds())/pkts, "ns/pkt")
			b.ReportMetric(pkts/total.Seconds(), "pkt/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
