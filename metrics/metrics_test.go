package metrics_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/goleak"

	"github.com/naquid/naquid/metrics"
	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/tools/certs/devcert"
	"github.com/naquid/naquid/transport/memconn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	methodEcho = 1
	methodHold = 2 // the server keeps the request unanswered until the test releases it
)

var bundle = sync.OnceValues(func() (*devcert.Bundle, error) { return devcert.New(devcert.Options{}) })

// pair is a server and a client with one open Conn, on loopback.
type pair struct {
	srv    *nq.Server
	client *nq.Client
	conn   *nq.Conn
	held   chan *nq.Request // requests of methodHold, as they arrive
	closed chan struct{}    // closed by the server's close hook
}

func newPair(t *testing.T, ctx context.Context) *pair {
	t.Helper()
	certs, err := bundle()
	if err != nil {
		t.Fatalf("certificates: %v", err)
	}
	p := &pair{held: make(chan *nq.Request, 1), closed: make(chan struct{})}
	smux := nq.NewMux()
	if err := smux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) {
		if req.Method == methodHold {
			p.held <- req
			return
		}
		req.Reply(req.Payload)
	}}); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	p.srv = &nq.Server{TLS: certs.ServerTLS(), Mux: smux, OnClose: func(*nq.Conn, error) { once.Do(func() { close(p.closed) }) }}
	if err := p.srv.Listen(ctx, "127.0.0.1:0"); err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { p.srv.Close() })

	cmux := nq.NewMux()
	if err := cmux.HandleRPC("rpc", nq.RPCHandler{}); err != nil {
		t.Fatal(err)
	}
	p.client = &nq.Client{TLS: certs.ClientTLS("localhost"), Mux: cmux, LocalAddr: netip.MustParseAddrPort("127.0.0.1:0")}
	t.Cleanup(func() { p.client.Close() })
	p.conn, err = p.client.Dial(ctx, p.srv.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return p
}

// exposition is one scrape: sample values by "name{labels}" and metric types by name.
type exposition struct {
	values map[string]float64
	types  map[string]string
	help   map[string]string
}

// scrape fetches url and parses the Prometheus text format.
func scrape(t *testing.T, ctx context.Context, url string) exposition {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	e := exposition{values: map[string]float64{}, types: map[string]string{}, help: map[string]string{}}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			if len(f) == 4 {
				e.types[f[2]] = f[3]
			}
		case strings.HasPrefix(line, "# HELP "):
			name, text, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			e.help[name] = text
		case line == "" || strings.HasPrefix(line, "#"):
		default:
			i := strings.LastIndexByte(line, ' ')
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if i < 0 || err != nil {
				t.Fatalf("scrape %s: bad sample line %q", url, line)
			}
			e.values[line[:i]] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return e
}

// check compares the samples of want with e.
func (e exposition) check(t *testing.T, when string, want map[string]float64) {
	t.Helper()
	for k, w := range want {
		got, ok := e.values[k]
		switch {
		case !ok:
			t.Errorf("%s: no sample %s", when, k)
		case got != w:
			t.Errorf("%s: %s = %v, want %v", when, k, got, w)
		}
	}
}

// TestScrape runs a real server and client, makes calls, and scrapes both collectors over HTTP:
// every metric is there with its type and help, and the values match what happened.
func TestScrape(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	p := newPair(t, ctx)

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(metrics.NewServerCollector("game", p.srv)); err != nil {
		t.Fatalf("register server collector: %v", err)
	}
	if err := reg.Register(metrics.NewClientCollector("bots", p.client)); err != nil {
		t.Fatalf("register client collector: %v", err)
	}
	hs := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	t.Cleanup(hs.Close)

	const calls = 5
	rpc := p.conn.RPC("rpc")
	for i := range calls {
		if _, err := rpc.Call(ctx, methodEcho, []byte{byte(i)}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	answered := make(chan error, 1)
	if err := rpc.Go(ctx, methodHold, nil, func(_ []byte, err error) { answered <- err }); err != nil {
		t.Fatalf("held call: %v", err)
	}
	var held *nq.Request
	select {
	case held = <-p.held:
	case <-ctx.Done():
		t.Fatal("the held request never reached the server")
	}

	e := scrape(t, ctx, hs.URL)
	types := map[string]string{
		"nq_server_connections":                "gauge",
		"nq_server_connections_accepted_total": "counter",
		"nq_server_connections_refused_total":  "counter",
		"nq_server_retries_total":              "counter",
		"nq_server_handshakes_in_progress":     "gauge",
		"nq_server_handshakes_refused_total":   "counter",
		"nq_server_requests_in_flight":         "gauge",
		"nq_server_frames_sent_total":          "counter",
		"nq_server_frames_received_total":      "counter",
		"nq_server_frames_held_total":          "counter",
		"nq_client_connections":                "gauge",
		"nq_client_connections_open":           "gauge",
		"nq_client_dials_total":                "counter",
		"nq_client_dial_failures_total":        "counter",
		"nq_client_connections_opened_total":   "counter",
		"nq_client_connections_closed_total":   "counter",
		"nq_client_frames_sent_total":          "counter",
		"nq_client_frames_received_total":      "counter",
		"nq_client_frames_held_total":          "counter",
	}
	for name, typ := range types {
		if got := e.types[name]; got != typ {
			t.Errorf("type of %s = %q, want %q", name, got, typ)
		}
		if e.help[name] == "" {
			t.Errorf("%s has no help text", name)
		}
	}
	if len(e.types) != len(types) {
		t.Errorf("scrape has %d metrics, want %d: %v", len(e.types), len(types), e.types)
	}
	s, c := `{server="game"}`, `{client="bots"}`
	e.check(t, "while a request is held", map[string]float64{
		"nq_server_connections" + s:                1,
		"nq_server_connections_accepted_total" + s: 1,
		"nq_server_connections_refused_total" + s:  0,
		"nq_server_retries_total" + s:              0,
		"nq_server_handshakes_in_progress" + s:     0,
		"nq_server_handshakes_refused_total" + s:   0,
		"nq_server_requests_in_flight" + s:         1,
		"nq_server_frames_sent_total" + s:          calls,     // replies
		"nq_server_frames_received_total" + s:      calls + 1, // requests, the held one included
		"nq_server_frames_held_total" + s:          0,
		"nq_client_connections" + c:                1,
		"nq_client_connections_open" + c:           1,
		"nq_client_dials_total" + c:                1,
		"nq_client_dial_failures_total" + c:        0,
		"nq_client_connections_opened_total" + c:   1,
		"nq_client_connections_closed_total" + c:   0,
		"nq_client_frames_sent_total" + c:          calls + 1,
		"nq_client_frames_received_total" + c:      calls,
		"nq_client_frames_held_total" + c:          0,
	})

	if err := held.Reply(nil); err != nil {
		t.Fatalf("reply to the held request: %v", err)
	}
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("held call: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the held call was never answered")
	}
	scrape(t, ctx, hs.URL).check(t, "after the held request was answered", map[string]float64{
		"nq_server_requests_in_flight" + s:    0,
		"nq_server_frames_sent_total" + s:     calls + 1,
		"nq_server_frames_received_total" + s: calls + 1,
		"nq_client_frames_sent_total" + c:     calls + 1,
		"nq_client_frames_received_total" + c: calls + 1,
	})

	p.conn.Close()
	for _, ch := range []<-chan struct{}{p.conn.Done(), p.closed} {
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatal("the connection did not close")
		}
	}
	scrape(t, ctx, hs.URL).check(t, "after the client closed its Conn", map[string]float64{
		"nq_server_connections" + s:                0,
		"nq_server_connections_accepted_total" + s: 1,
		"nq_server_frames_received_total" + s:      calls + 1,
		"nq_client_connections" + c:                0,
		"nq_client_connections_open" + c:           0,
		"nq_client_connections_opened_total" + c:   1,
		"nq_client_connections_closed_total" + c:   1,
	})
}

// TestRegistration: collectors of several servers and clients share a registry when their names
// differ; a repeated name and a nil source are refused with an error, never a panic.
func TestRegistration(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for _, name := range []string{"eu-1", "eu-2"} {
		if err := reg.Register(metrics.NewServerCollector(name, &nq.Server{})); err != nil {
			t.Errorf("register server %q: %v", name, err)
		}
		if err := reg.Register(metrics.NewClientCollector(name, &nq.Client{})); err != nil {
			t.Errorf("register client %q: %v", name, err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if len(mf.GetMetric()) != 2 {
			t.Errorf("%s has %d series, want 2 (one per name)", mf.GetName(), len(mf.GetMetric()))
		}
	}

	var already prometheus.AlreadyRegisteredError
	if err := reg.Register(metrics.NewServerCollector("eu-1", &nq.Server{})); !errors.As(err, &already) {
		t.Errorf("register a second server named eu-1: %v, want AlreadyRegisteredError", err)
	}
	if err := reg.Register(metrics.NewServerCollector("x", nil)); !errors.Is(err, metrics.ErrNilSource) {
		t.Errorf("register a nil server: %v, want ErrNilSource", err)
	}
	if err := reg.Register(metrics.NewClientCollector("x", nil)); !errors.Is(err, metrics.ErrNilSource) {
		t.Errorf("register a nil client: %v, want ErrNilSource", err)
	}
	if err := reg.Register(metrics.NewClientCollector("\xff", &nq.Client{})); err == nil {
		t.Error("a name that is not UTF-8 was accepted")
	}
}

// TestTransportMetrics: with a transport that keeps counters (memconn here; mmsg and afxdp too)
// the collectors report them; with kernel UDP, which quic-go drives itself, they are left out
// (TestScrape), not reported as zeros.
func TestTransportMetrics(t *testing.T) {
	n, err := memconn.NewNetwork(memconn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	certs, err := devcert.New(devcert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(r *nq.Request) { r.Reply(r.Payload) }}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := &nq.Server{TLS: certs.ServerTLS(), Mux: mux, Transport: n.Factory()}
	if err := srv.Listen(ctx, "192.0.2.1:4433"); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl := &nq.Client{TLS: certs.ClientTLS("localhost"), Mux: mux, Transport: n.Factory(),
		LocalAddr: netip.MustParseAddrPort("192.0.2.2:0")}
	defer cl.Close()
	conn, err := cl.Dial(ctx, "192.0.2.1:4433")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.RPC("rpc").Call(ctx, 1, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewServerCollector("s", srv), metrics.NewClientCollector("c", cl))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			got[f.GetName()] = m.GetCounter().GetValue()
		}
	}
	for _, name := range []string{"nq_server_transport_packets_read_total", "nq_server_transport_packets_written_total",
		"nq_client_transport_packets_read_total", "nq_client_transport_packets_written_total",
		"nq_server_transport_bytes_read_total", "nq_client_transport_bytes_written_total"} {
		if got[name] <= 0 {
			t.Errorf("%s = %v after a handshake and a call, want > 0", name, got[name])
		}
	}
	if _, ok := got["nq_server_transport_kernel_drops_total"]; !ok {
		t.Error("nq_server_transport_kernel_drops_total is missing")
	}
}
