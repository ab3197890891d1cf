// Package metrics exposes the counters of naquid servers and clients to Prometheus.
//
// [NewServerCollector] and [NewClientCollector] return prometheus.Collector values that read
// [nq.Server.Stats] and [nq.Client.Stats] when Prometheus scrapes them: there is no background
// goroutine and nothing to stop, and a collector costs nothing between scrapes. The name given to
// a collector becomes the constant label server="name" or client="name", so one process can
// register several servers and clients on the same registry.
//
// Usage:
//
//	srv := &nq.Server{TLS: tlsConf, Mux: mux}
//	reg := prometheus.NewRegistry()
//	if err := reg.Register(metrics.NewServerCollector("game", srv)); err != nil {
//		return err
//	}
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// # Metrics
//
// Server (label server):
//
//	nq_server_connections                  gauge    open connections (within MaxConns)
//	nq_server_connections_accepted_total   counter  handshakes completed (the refused included: let in = accepted - refused)
//	nq_server_connections_refused_total    counter  connections closed right after the handshake (MaxConns, OnOpen, shutdown)
//	nq_server_retries_total                counter  Initial packets the server asked to answer with a QUIC Retry
//	nq_server_handshakes_in_progress       gauge    handshakes in progress (MaxHandshakes caps them)
//	nq_server_handshakes_refused_total     counter  Initial packets refused by MaxHandshakes (an attempt may send several)
//	nq_server_requests_in_flight           gauge    requests being handled, not yet answered
//	nq_server_frames_sent_total            counter  frames sent over every connection
//	nq_server_frames_received_total        counter  frames received over every connection
//
// Client (label client):
//
//	nq_client_connections                  gauge    Conns not yet finalized
//	nq_client_connections_open             gauge    Conns with a connection up
//	nq_client_dials_total                  counter  connection attempts
//	nq_client_dial_failures_total          counter  connection attempts that failed
//	nq_client_connections_opened_total     counter  successful handshakes, reconnects included
//	nq_client_connections_closed_total     counter  ends of established connections
//	nq_client_frames_sent_total            counter  frames sent by the client's Conns
//	nq_client_frames_received_total        counter  frames received by the client's Conns
//
// Packet transport (prefixes nq_server_transport_ and nq_client_transport_; transport.Counters,
// summed over a client's sockets), reported only for transports that keep them (mmsg, afxdp,
// memconn; not kernel UDP, whose socket quic-go drives itself):
//
//	packets_read_total, packets_written_total   counter  datagrams (segments count one each)
//	bytes_read_total, bytes_written_total       counter  UDP payload bytes
//	read_calls_total, write_calls_total         counter  system calls or ring operations
//	drops_total                                 counter  datagrams the transport dropped
//	kernel_drops_total                          counter  datagrams the kernel dropped (receive queue, XDP ring)
//	ring_full_total, ring_empty_total           counter  AF_XDP rings found full on produce, empty on consume
//
// This is the only naquid package that imports the Prometheus client library; programs that do
// not import it do not link it.
package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/transport"
)

// Label names carrying the name given to a collector.
const (
	// ServerLabel labels the series of NewServerCollector: server="name".
	ServerLabel = "server"
	// ClientLabel labels the series of NewClientCollector: client="name".
	ClientLabel = "client"
)

// ErrNilSource is reported (by the registry's Register) for a collector made for a nil server or
// client.
var ErrNilSource = errors.New("metrics: nil server or client")

// def defines one metric read from a stats snapshot of type S.
type def[S any] struct {
	name, help string
	kind       prometheus.ValueType
	value      func(S) float64
	present    func(S) bool // nil: always; else the metric is left out of scrapes where false
}

// serverSnapshot is what one scrape of a server reads.
type serverSnapshot struct {
	nq.ServerStats
	transport    transport.Counters
	hasTransport bool
}

// clientSnapshot is what one scrape of a client reads.
type clientSnapshot struct {
	nq.ClientStats
	transport    transport.Counters
	hasTransport bool
}

// transportDefs defines the packet-transport counters (transport.Counters) under prefix, present
// when get reports the backend keeps them.
func transportDefs[S any](prefix string, get func(S) (transport.Counters, bool)) []def[S] {
	present := func(s S) bool { _, ok := get(s); return ok }
	counter := func(name, help string, v func(transport.Counters) uint64) def[S] {
		return def[S]{prefix + name, help, prometheus.CounterValue,
			func(s S) float64 { c, _ := get(s); return float64(v(c)) }, present}
	}
	return []def[S]{
		counter("packets_read_total", "Datagrams the packet transport read (segments count one each).",
			func(c transport.Counters) uint64 { return c.PacketsRead }),
		counter("packets_written_total", "Datagrams the packet transport wrote.",
			func(c transport.Counters) uint64 { return c.PacketsWritten }),
		counter("bytes_read_total", "UDP payload bytes the packet transport read.",
			func(c transport.Counters) uint64 { return c.BytesRead }),
		counter("bytes_written_total", "UDP payload bytes the packet transport wrote.",
			func(c transport.Counters) uint64 { return c.BytesWritten }),
		counter("read_calls_total", "System calls or ring operations of the transport's reads.",
			func(c transport.Counters) uint64 { return c.ReadCalls }),
		counter("write_calls_total", "System calls or ring operations of the transport's writes.",
			func(c transport.Counters) uint64 { return c.WriteCalls }),
		counter("drops_total", "Datagrams the transport itself dropped (back-pressure, malformed frames, faults).",
			func(c transport.Counters) uint64 { return c.Drops }),
		counter("kernel_drops_total", "Datagrams the kernel dropped before the transport saw them (receive queue or XDP ring overflow).",
			func(c transport.Counters) uint64 { return c.KernelDrops }),
		counter("ring_full_total", "Times an AF_XDP ring or queue was full on produce.",
			func(c transport.Counters) uint64 { return c.RingFull }),
		counter("ring_empty_total", "Times an AF_XDP ring or queue was empty on consume.",
			func(c transport.Counters) uint64 { return c.RingEmpty }),
	}
}

var serverDefs = append([]def[serverSnapshot]{
	{"nq_server_connections", "Open connections.", prometheus.GaugeValue,
		func(s serverSnapshot) float64 { return float64(s.Conns) }, nil},
	{"nq_server_connections_accepted_total", "Connections whose handshake completed (those then refused included).", prometheus.CounterValue,
		func(s serverSnapshot) float64 { return float64(s.Accepted) }, nil},
	{"nq_server_connections_refused_total", "Connections closed right after their handshake by MaxConns, the open hook or a shutdown.", prometheus.CounterValue,
		func(s serverSnapshot) float64 { return float64(s.Refused) }, nil},
	{"nq_server_retries_total", "Initial packets the server asked to answer with a QUIC Retry (address validation under load; quic-go drops Retries it cannot queue).", prometheus.CounterValue,
		func(s serverSnapshot) float64 { return float64(s.Retries) }, nil},
	{"nq_server_handshakes_in_progress", "Handshakes in progress (capped by MaxHandshakes).", prometheus.GaugeValue,
		func(s serverSnapshot) float64 { return float64(s.Handshakes) }, nil},
	{"nq_server_handshakes_refused_total", "Initial packets refused with CONNECTION_REFUSED because MaxHandshakes handshakes were in progress (an attempt may send several).", prometheus.CounterValue,
		func(s serverSnapshot) float64 { return float64(s.HandshakesRefused) }, nil},
	{"nq_server_requests_in_flight", "Requests being handled and not yet answered.", prometheus.GaugeValue,
		func(s serverSnapshot) float64 { return float64(s.InFlight) }, nil},
	{"nq_server_frames_sent_total", "Frames sent over every connection.", prometheus.CounterValue,
		func(s serverSnapshot) float64 { return float64(s.FramesSent) }, nil},
	{"nq_server_frames_received_total", "Frames received over every connection.", prometheus.CounterValue,
		func(s serverSnapshot) float64 { return float64(s.FramesReceived) }, nil},
	{"nq_server_frames_held_total", "Requests (and notifications behind them) held back because over 256 KiB of output to their peer was unsent on their stream (peers asking faster than they read) or the handler held its MaxUnanswered requests unanswered.", prometheus.CounterValue,
		func(s serverSnapshot) float64 { return float64(s.FramesHeld) }, nil},
}, transportDefs("nq_server_transport_", func(s serverSnapshot) (transport.Counters, bool) { return s.transport, s.hasTransport })...)

var clientDefs = append([]def[clientSnapshot]{
	{"nq_client_connections", "Conns not yet finalized (connected or reconnecting).", prometheus.GaugeValue,
		func(s clientSnapshot) float64 { return float64(s.Conns) }, nil},
	{"nq_client_connections_open", "Conns with a connection up.", prometheus.GaugeValue,
		func(s clientSnapshot) float64 { return float64(s.Open) }, nil},
	{"nq_client_dials_total", "Connection attempts.", prometheus.CounterValue,
		func(s clientSnapshot) float64 { return float64(s.Dials) }, nil},
	{"nq_client_dial_failures_total", "Connection attempts that failed (resolution or handshake).", prometheus.CounterValue,
		func(s clientSnapshot) float64 { return float64(s.DialFailures) }, nil},
	{"nq_client_connections_opened_total", "Successful handshakes, reconnects included.", prometheus.CounterValue,
		func(s clientSnapshot) float64 { return float64(s.Opens) }, nil},
	{"nq_client_connections_closed_total", "Ends of established connections.", prometheus.CounterValue,
		func(s clientSnapshot) float64 { return float64(s.Closes) }, nil},
	{"nq_client_frames_sent_total", "Frames sent by the client's Conns.", prometheus.CounterValue,
		func(s clientSnapshot) float64 { return float64(s.FramesSent) }, nil},
	{"nq_client_frames_received_total", "Frames received by the client's Conns.", prometheus.CounterValue,
		func(s clientSnapshot) float64 { return float64(s.FramesReceived) }, nil},
	{"nq_client_frames_held_total", "Requests (and notifications behind them) held back because over 256 KiB of output to the server was unsent on their stream or the handler held its MaxUnanswered requests unanswered.", prometheus.CounterValue,
		func(s clientSnapshot) float64 { return float64(s.FramesHeld) }, nil},
}, transportDefs("nq_client_transport_", func(s clientSnapshot) (transport.Counters, bool) { return s.transport, s.hasTransport })...)

// NewServerCollector returns a collector of srv's counters ([nq.ServerStats]), labelled
// server=name. It reads srv.Stats at each scrape; it may be registered before srv listens. A nil
// srv gives a collector that registries refuse with an error matching [ErrNilSource].
func NewServerCollector(name string, srv *nq.Server) prometheus.Collector {
	if srv == nil {
		return invalid{prometheus.NewInvalidDesc(ErrNilSource)}
	}
	return newCollector(serverDefs, ServerLabel, name, func() serverSnapshot {
		tc, ok := srv.TransportStats()
		return serverSnapshot{srv.Stats(), tc, ok}
	})
}

// NewClientCollector returns a collector of cl's counters ([nq.ClientStats]), labelled
// client=name. It reads cl.Stats at each scrape. A nil cl gives a collector that registries
// refuse with an error matching [ErrNilSource].
func NewClientCollector(name string, cl *nq.Client) prometheus.Collector {
	if cl == nil {
		return invalid{prometheus.NewInvalidDesc(ErrNilSource)}
	}
	return newCollector(clientDefs, ClientLabel, name, func() clientSnapshot {
		tc, ok := cl.TransportStats()
		return clientSnapshot{cl.Stats(), tc, ok}
	})
}

// metric is a def bound to its descriptor.
type metric[S any] struct {
	desc    *prometheus.Desc
	kind    prometheus.ValueType
	value   func(S) float64
	present func(S) bool
}

// collector reads one stats snapshot per scrape and reports every metric from it, so the values
// of one scrape are consistent with each other.
type collector[S any] struct {
	stats   func() S
	metrics []metric[S]
}

func newCollector[S any](defs []def[S], label, name string, stats func() S) *collector[S] {
	c := &collector[S]{stats: stats, metrics: make([]metric[S], len(defs))}
	for i, d := range defs {
		c.metrics[i] = metric[S]{
			desc:    prometheus.NewDesc(d.name, d.help, nil, prometheus.Labels{label: name}),
			kind:    d.kind,
			value:   d.value,
			present: d.present,
		}
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *collector[S]) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *collector[S]) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	for _, m := range c.metrics {
		if m.present != nil && !m.present(st) {
			continue
		}
		pm, err := prometheus.NewConstMetric(m.desc, m.kind, m.value(st))
		if err != nil {
			pm = prometheus.NewInvalidMetric(m.desc, err)
		}
		ch <- pm
	}
}

// invalid is the collector of a nil source: registering it fails with its descriptor's error.
type invalid struct{ desc *prometheus.Desc }

// Describe implements prometheus.Collector.
func (c invalid) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c invalid) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(c.desc, ErrNilSource)
}
