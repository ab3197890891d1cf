package metrics_test

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/naquid/naquid/metrics"
	"github.com/naquid/naquid/nq"
)

// Register a server's collector and serve it over HTTP; a real program would use
// http.Handle("/metrics", ...) and http.ListenAndServe. The collector may be registered before
// the server listens: until then every value is zero.
func ExampleNewServerCollector() {
	srv := &nq.Server{} // set TLS and Mux, then Listen
	reg := prometheus.NewRegistry()
	if err := reg.Register(metrics.NewServerCollector("game", srv)); err != nil {
		fmt.Println(err)
		return
	}
	hs := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer hs.Close()

	resp, err := http.Get(hs.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "#") {
			fmt.Println(sc.Text())
		}
	}
	// Output:
	// nq_server_connections{server="game"} 0
	// nq_server_connections_accepted_total{server="game"} 0
	// nq_server_connections_refused_total{server="game"} 0
	// nq_server_frames_held_total{server="game"} 0
	// nq_server_frames_received_total{server="game"} 0
	// nq_server_frames_sent_total{server="game"} 0
	// nq_server_handshakes_in_progress{server="game"} 0
	// nq_server_handshakes_refused_total{server="game"} 0
	// nq_server_requests_in_flight{server="game"} 0
	// nq_server_retries_total{server="game"} 0
}
