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
//	nq_server_connections                  gauge    open connections
//	nq_server_connections_accepted_total   counter  handshakes completed
//	nq_server_connections_refused_total    counter  connections closed right after the handshake (MaxConns, OnOpen, shutdown)
//	nq_server_retries_total                counter  Initial packets the server asked to answer with a QUIC Retry
//	nq_server_handshakes_in_progress       gauge    handshakes in progress (MaxHandshakes caps them)
//	nq_server_handshakes_refused_total     counter  connection attempts refused by MaxHandshakes
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
// This is the only naquid package that imports the Prometheus client library; programs that do
// not import it do not link it.
package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/naquid/naquid/nq"
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
}

var serverDefs = []def[nq.ServerStats]{
	{"nq_server_connections", "Open connections.", prometheus.GaugeValue,
		func(s nq.ServerStats) float64 { return float64(s.Conns) }},
	{"nq_server_connections_accepted_total", "Connections whose handshake completed.", prometheus.CounterValue,
		func(s nq.ServerStats) float64 { return float64(s.Accepted) }},
	{"nq_server_connections_refused_total", "Connections closed right after their handshake by MaxConns, the open hook or a shutdown.", prometheus.CounterValue,
		func(s nq.ServerStats) float64 { return float64(s.Refused) }},
	{"nq_server_retries_total", "Initial packets the server asked to answer with a QUIC Retry (address validation under load; quic-go drops Retries it cannot queue).", prometheus.CounterValue,
		func(s nq.ServerStats) float64 { return float64(s.Retries) }},
	{"nq_server_handshakes_in_progress", "Handshakes in progress (capped by MaxHandshakes).", prometheus.GaugeValue,
		func(s nq.ServerStats) float64 { return float64(s.Handshakes) }},
	{"nq_server_handshakes_refused_total", "Connection attempts refused with CONNECTION_REFUSED because MaxHandshakes handshakes were in progress.", prometheus.CounterValue,
		func(s nq.ServerStats) float64 { return float64(s.HandshakesRefused) }},
	{"nq_server_requests_in_flight", "Requests being handled and not yet answered.", prometheus.GaugeValue,
		func(s nq.ServerStats) float64 { return float64(s.InFlight) }},
	{"nq_server_frames_sent_total", "Frames sent over every connection.", prometheus.CounterValue,
		func(s nq.ServerStats) float64 { return float64(s.FramesSent) }},
	{"nq_server_frames_received_total", "Frames received over every connection.", prometheus.CounterValue,
		func(s nq.ServerStats) float64 { return float64(s.FramesReceived) }},
}

var clientDefs = []def[nq.ClientStats]{
	{"nq_client_connections", "Conns not yet finalized (connected or reconnecting).", prometheus.GaugeValue,
		func(s nq.ClientStats) float64 { return float64(s.Conns) }},
	{"nq_client_connections_open", "Conns with a connection up.", prometheus.GaugeValue,
		func(s nq.ClientStats) float64 { return float64(s.Open) }},
	{"nq_client_dials_total", "Connection attempts.", prometheus.CounterValue,
		func(s nq.ClientStats) float64 { return float64(s.Dials) }},
	{"nq_client_dial_failures_total", "Connection attempts that failed (resolution or handshake).", prometheus.CounterValue,
		func(s nq.ClientStats) float64 { return float64(s.DialFailures) }},
	{"nq_client_connections_opened_total", "Successful handshakes, reconnects included.", prometheus.CounterValue,
		func(s nq.ClientStats) float64 { return float64(s.Opens) }},
	{"nq_client_connections_closed_total", "Ends of established connections.", prometheus.CounterValue,
		func(s nq.ClientStats) float64 { return float64(s.Closes) }},
	{"nq_client_frames_sent_total", "Frames sent by the client's Conns.", prometheus.CounterValue,
		func(s nq.ClientStats) float64 { return float64(s.FramesSent) }},
	{"nq_client_frames_received_total", "Frames received by the client's Conns.", prometheus.CounterValue,
		func(s nq.ClientStats) float64 { return float64(s.FramesReceived) }},
}

// NewServerCollector returns a collector of srv's counters ([nq.ServerStats]), labelled
// server=name. It reads srv.Stats at each scrape; it may be registered before srv listens. A nil
// srv gives a collector that registries refuse with an error matching [ErrNilSource].
func NewServerCollector(name string, srv *nq.Server) prometheus.Collector {
	if srv == nil {
		return invalid{prometheus.NewInvalidDesc(ErrNilSource)}
	}
	return newCollector(serverDefs, ServerLabel, name, srv.Stats)
}

// NewClientCollector returns a collector of cl's counters ([nq.ClientStats]), labelled
// client=name. It reads cl.Stats at each scrape. A nil cl gives a collector that registries
// refuse with an error matching [ErrNilSource].
func NewClientCollector(name string, cl *nq.Client) prometheus.Collector {
	if cl == nil {
		return invalid{prometheus.NewInvalidDesc(ErrNilSource)}
	}
	return newCollector(clientDefs, ClientLabel, name, cl.Stats)
}

// metric is a def bound to its descriptor.
type metric[S any] struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(S) float64
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
			desc:  prometheus.NewDesc(d.name, d.help, nil, prometheus.Labels{label: name}),
			kind:  d.kind,
			value: d.value,
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
