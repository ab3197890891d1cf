package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/naquid/naquid/metrics"
	"github.com/naquid/naquid/nq"
)

// metricsName labels the demo's series: server="nq-demo" and client="nq-demo".
const metricsName = "nq-demo"

// metricsServer serves /metrics over HTTP from its own registry, which starts empty: the nq
// workload registers its server and client once it has made them.
type metricsServer struct {
	reg  *prometheus.Registry
	ln   net.Listener
	hs   *http.Server
	done chan struct{}
	err  error // what Serve returned; read after done is closed
}

// listenMetrics binds addr (host:port; port 0 picks one) and starts serving.
func listenMetrics(addr string) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	reg := prometheus.NewRegistry()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m := &metricsServer{
		reg:  reg,
		ln:   ln,
		hs:   &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		done: make(chan struct{}),
	}
	go func() {
		m.err = m.hs.Serve(ln)
		close(m.done)
	}()
	return m, nil
}

// url returns the address to scrape.
func (m *metricsServer) url() string { return "http://" + m.ln.Addr().String() + "/metrics" }

// register adds the collectors of the workload's server and client.
func (m *metricsServer) register(srv *nq.Server, client *nq.Client) error {
	if err := m.reg.Register(metrics.NewServerCollector(metricsName, srv)); err != nil {
		return fmt.Errorf("metrics: register server: %w", err)
	}
	if err := m.reg.Register(metrics.NewClientCollector(metricsName, client)); err != nil {
		return fmt.Errorf("metrics: register client: %w", err)
	}
	return nil
}

// close stops serving and returns why serving stopped early, if it did. A nil m does nothing.
func (m *metricsServer) close() error {
	if m == nil {
		return nil
	}
	m.hs.Close()
	<-m.done
	if errors.Is(m.err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("metrics: serve %s: %w", m.ln.Addr(), m.err)
}
