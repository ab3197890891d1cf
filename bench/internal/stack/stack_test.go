package stack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/mem"

	"github.com/naquid/naquid/bench/internal/measure"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/udp"
)

func testCerts(t *testing.T) *Certs {
	t.Helper()
	c, err := NewCerts()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func frame(payload string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(payload)))
	return append(b, payload...)
}

func TestFrameBuffered(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want bool
	}{
		{"empty", nil, false},
		{"half a header", []byte{0}, false},
		{"header only", frame("abc")[:2], false},
		{"partial payload", frame("abc")[:4], false},
		{"whole frame", frame("abc"), true},
		{"empty payload", frame(""), true},
		{"frame and more", append(frame("ab"), 0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(bytes.NewReader(tc.in))
			_, _ = br.Peek(len(tc.in)) // fill the buffer with everything there is
			if got := frameBuffered(br); got != tc.want {
				t.Errorf("frameBuffered = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWriteAndSkipFrames(t *testing.T) {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	payloads := []string{"", "x", strings.Repeat("y", 5000)}
	for _, p := range payloads {
		if err := writeFrame(bw, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, p := range payloads {
		want += frameHeader + len(p)
	}
	if b.Len() != want {
		t.Fatalf("wrote %d bytes, want %d", b.Len(), want)
	}
	br := bufio.NewReaderSize(&b, 16)
	for range payloads[:2] {
		if err := skipFrame(br); err != nil {
			t.Fatal(err)
		}
	}
	// The large frame does not fit the 16-byte reader: skipFrame cannot peek it whole but must
	// still consume it.
	if err := skipFrame(br); err != nil {
		t.Fatalf("skipping a frame larger than the buffer: %v", err)
	}
	if err := skipFrame(br); !errors.Is(err, io.EOF) {
		t.Errorf("skipFrame at the end = %v, want io.EOF", err)
	}
}

func TestEchoFramed(t *testing.T) {
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close(); server.Close() })
	done := make(chan error, 1)
	go func() { done <- echoFramed(server) }()
	in := [][]byte{frame("hello"), frame(""), frame(strings.Repeat("z", 3*bufSize))}
	go func() {
		for _, f := range in {
			if _, err := client.Write(f); err != nil {
				return
			}
		}
	}()
	_ = client.SetDeadline(time.Now().Add(10 * time.Second))
	for i, f := range in {
		got := make([]byte, len(f))
		if _, err := io.ReadFull(client, got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, f) {
			t.Fatalf("frame %d echoed as %d bytes that differ", i, len(got))
		}
	}
	client.Close()
	if err := <-done; err == nil {
		t.Error("echoFramed returned nil after the client closed, want the read error")
	}
}

func TestRawCodec(t *testing.T) {
	c := rawCodec{}
	in := []byte("payload")
	for _, v := range []any{in, &in} {
		bs, err := c.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var out []byte
		if err := c.Unmarshal(bs, &out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, in) {
			t.Errorf("round trip of %T = %q", v, out)
		}
	}
	if _, err := c.Marshal(42); err == nil {
		t.Error("Marshal(int) succeeded")
	}
	var s string
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer("x")}, &s); err == nil {
		t.Error("Unmarshal into *string succeeded")
	}
}

func TestConfigValidation(t *testing.T) {
	certs := testCerts(t)
	for _, tc := range []struct {
		name, stack string
		cfg         Config
		want        string
	}{
		{"unknown stack", "smoke", Config{}, "unknown stack"},
		{"negative per socket", TCP, Config{PerSocket: -1}, "PerSocket"},
		{"negative timeout", TCP, Config{CallTimeout: -time.Second}, "CallTimeout"},
		{"unknown transport", NQ, Config{Certs: certs, Transport: "carrier-pigeon"}, "Transport"},
		{"no certs", QUIC, Config{}, "Certs"},
		{"afxdp without factories", NQ, Config{Certs: certs, Transport: "afxdp"}, "needs an interface"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.stack, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error naming %q", err, tc.want)
			}
		})
	}
	if _, err := New("nope", Config{}); !errors.Is(err, ErrUnknown) {
		t.Errorf("unknown stack error %v does not match ErrUnknown", err)
	}
	if _, err := New(NQ, Config{Certs: certs, Transport: "afxdp"}); !errors.Is(err, ErrNeedsFactory) {
		t.Errorf("afxdp error %v does not match ErrNeedsFactory", err)
	}
}

// TestNQFactories checks that Config.ServerFactory and Config.ClientFactory open the nq
// server's and clients' sockets (counting kernel UDP factories stand in for afxdp here), and
// that an afxdp stack with only a server factory serves but cannot dial.
func TestNQFactories(t *testing.T) {
	certs := testCerts(t)
	var servers, clients atomic.Int64
	counting := func(n *atomic.Int64) transport.Factory {
		open := udp.Factory(udp.Config{})
		return func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
			n.Add(1)
			return open(ctx, local)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	st, err := New(NQ, Config{Certs: certs, Transport: "afxdp", ServerFactory: counting(&servers), ClientFactory: counting(&clients)})
	if err != nil {
		t.Fatal(err)
	}
	if st.Name() != "nq/afxdp" {
		t.Errorf("Name = %q, want nq/afxdp", st.Name())
	}
	srv, d := listen(t, ctx, st)
	c, err := d.Dial(ctx, srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if got, err := c.Pipeline(ctx, 50, 4, []byte("12345678"), measure.NewRecorder(1).Shard(0)); got != 50 || err != nil {
		t.Fatalf("Pipeline = %d, %v; want 50, nil", got, err)
	}
	if servers.Load() != 1 || clients.Load() != 1 {
		t.Errorf("factories opened %d server and %d client sockets, want 1 and 1", servers.Load(), clients.Load())
	}

	serverOnly, err := New(NQ, Config{Certs: certs, Transport: "afxdp", ServerFactory: counting(&servers)})
	if err != nil {
		t.Fatalf("a server-only afxdp stack: %v", err)
	}
	d2, err := serverOnly.NewDialer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Close() })
	if _, err := d2.Dial(ctx, srv.Addr()); !errors.Is(err, ErrNeedsFactory) {
		t.Errorf("Dial without a client factory = %v, want ErrNeedsFactory", err)
	}
}

func TestCertsFiles(t *testing.T) {
	dir := t.TempDir()
	c := testCerts(t)
	if err := c.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.HasServer() {
		t.Fatal("loaded certificates have no server leaf")
	}
	if err := loaded.WriteFiles(t.TempDir()); err == nil {
		t.Error("WriteFiles of loaded certificates succeeded")
	}
	if _, err := LoadCerts(t.TempDir()); err == nil {
		t.Error("LoadCerts of an empty directory succeeded")
	}
	// A TLS server from the loaded files, a client trusting only the files' CA.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	st, err := New(TLS, Config{Certs: loaded})
	if err != nil {
		t.Fatal(err)
	}
	srv, d := listen(t, ctx, st)
	if _, err := d.Dial(ctx, srv.Addr()); err != nil {
		t.Fatalf("dial with certificates from files: %v", err)
	}
}

// TestStacks runs both call patterns on every stack: a pipeline on two connections, then
// open-loop sends on a third.
func TestStacks(t *testing.T) {
	certs := testCerts(t)
	cases := []struct{ stack, transport string }{
		{NQ, "udp"}, {NQ, "mmsg"}, {QUIC, ""}, {TCP, ""}, {TLS, ""}, {GRPC, ""}, {KCP, ""},
	}
	for _, tc := range cases {
		name := tc.stack
		if tc.transport != "" {
			name += "/" + tc.transport
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			t.Cleanup(cancel)
			st, err := New(tc.stack, Config{Certs: certs, Transport: tc.transport, PerSocket: 2})
			if err != nil {
				t.Fatal(err)
			}
			if st.Name() != name {
				t.Errorf("Name = %q, want %q", st.Name(), name)
			}
			srv, d := listen(t, ctx, st)

			rec := measure.NewRecorder(2)
			const n, w = 300, 8
			payload := []byte("12345678")
			errc := make(chan error, 2)
			for i := range 2 {
				c, err := d.Dial(ctx, srv.Addr())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				go func() {
					got, err := c.Pipeline(ctx, n, w, payload, rec.Shard(i))
					if err == nil && got != n {
						err = errors.New("pipeline answered fewer calls than asked")
					}
					errc <- err
				}()
			}
			for range 2 {
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			if got, errs := rec.Count(); got != 2*n || errs != 0 {
				t.Fatalf("recorded %d calls and %d errors, want %d and 0", got, errs, 2*n)
			}

			c, err := d.Dial(ctx, srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			const sends = 20
			done := make(chan error, sends)
			for range sends {
				if err := c.Send(make([]byte, 64), func(err error) { done <- err }); err != nil {
					t.Fatal(err)
				}
			}
			for range sends {
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-ctx.Done():
					t.Fatal("sends not answered in time")
				}
			}
			if err := checkPipeline(1, 0, nil); err == nil {
				t.Error("checkPipeline accepted a window of 0")
			}
		})
	}
}

// TestFramedSendFailsQueuedCalls checks that closing a connection ends every pending Send
// exactly once with an error.
func TestFramedSendFailsQueuedCalls(t *testing.T) {
	client, server := net.Pipe()
	t.Cleanup(func() { server.Close() })
	go func() { _, _ = io.Copy(io.Discard, server) }() // reads the calls, never answers
	fc := newFramedConn(func(context.Context) (stream, error) { return client, nil }, client.Close)
	const sends = 5
	done := make(chan error, sends*2)
	for range sends {
		if err := fc.Send([]byte("x"), func(err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
	}
	if err := fc.Close(); err != nil {
		t.Fatal(err)
	}
	for range sends {
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("a pending call ended without an error")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("pending calls did not end after Close")
		}
	}
	select {
	case err := <-done:
		t.Fatalf("a callback ran twice (%v)", err)
	default:
	}
	if err := fc.Send([]byte("x"), func(error) {}); err == nil {
		t.Error("Send after the connection failed returned nil")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if _, err := fc.Pipeline(ctx, 1, 1, []byte("x"), measure.NewRecorder(1).Shard(0)); err == nil {
		t.Error("Pipeline on a connection used for Send succeeded")
	}
}

// listen starts st's server on loopback and a dialer for it, both closed at the end of the test.
func listen(t *testing.T, ctx context.Context, st Stack) (Server, Dialer) {
	t.Helper()
	srv, err := st.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	d, err := st.NewDialer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return srv, d
}

// TestPipelineCountsFailedCalls: a pipeline cut off by its deadline counts the calls in flight as
// errors on every stack (the framed ones counted none, nq and gRPC one per call in flight).
func TestPipelineCountsFailedCalls(t *testing.T) {
	certs := testCerts(t)
	const w = 8
	for _, name := range []string{TCP, QUIC, NQ, GRPC} {
		t.Run(name, func(t *testing.T) {
			st, err := New(name, Config{Certs: certs})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			srv, err := st.Listen(ctx, "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			d, err := st.NewDialer()
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			c, err := d.Dial(ctx, srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := measure.NewRecorder(1)
			// Far more calls than fit in the time: the deadline cuts the pipeline off.
			pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer pcancel()
			if _, err := c.Pipeline(pctx, 1<<40, w, []byte("12345678"), r.Shard(0)); err == nil {
				t.Fatal("the pipeline outlived its deadline")
			}
			if _, errs := r.Count(); errs < 1 || errs > w+1 {
				t.Fatalf("%d failed calls counted, want the calls in flight (1..%d)", errs, w+1)
			}
		})
	}
}
