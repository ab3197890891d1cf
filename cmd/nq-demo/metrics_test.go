package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrapeSamples fetches url and returns its samples by "name{labels}".
func scrapeSamples(ctx context.Context, hc *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("scrape %s: bad sample line %q", url, line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("scrape %s: bad sample line %q", url, line)
		}
		samples[line[:i]] = v
	}
	return samples, sc.Err()
}

// TestRunMetrics runs the demo with -metrics on port 0, scrapes the address it prints once the
// workload is done (before its server and client close), checks the counters against the
// workload, and checks that nothing listens there after the run.
func TestRunMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

	var out bytes.Buffer
	var url string
	var samples map[string]float64
	var scrapeErr error
	cfg := config{Transport: "memconn", Conns: 3, Calls: 40, Window: 4, Metrics: "127.0.0.1:0", Timeout: 20 * time.Second}
	cfg.afterLoad = func() {
		m := regexp.MustCompile(`(?m)^metrics +(http://127\.0\.0\.1:\d+/metrics) `).FindStringSubmatch(out.String())
		if m == nil {
			scrapeErr = fmt.Errorf("no metrics address in the output so far:\n%s", out.String())
			return
		}
		url = m[1]
		samples, scrapeErr = scrapeSamples(ctx, hc, url)
	}
	if err := run(ctx, cfg, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Logf("\n%s", out.String())
	if scrapeErr != nil {
		t.Fatal(scrapeErr)
	}

	total := float64(cfg.Conns * cfg.Calls)
	conns := float64(cfg.Conns)
	s, c := `{server="nq-demo"}`, `{client="nq-demo"}`
	want := map[string]float64{
		"nq_server_connections" + s:                conns,
		"nq_server_connections_accepted_total" + s: conns,
		"nq_server_connections_refused_total" + s:  0,
		"nq_server_retries_total" + s:              0,
		"nq_server_handshakes_in_progress" + s:     0,
		"nq_server_handshakes_refused_total" + s:   0,
		"nq_server_requests_in_flight" + s:         0,
		"nq_server_frames_sent_total" + s:          total,
		"nq_server_frames_received_total" + s:      total,
		"nq_server_frames_held_total" + s:          0,
		"nq_client_connections" + c:                conns,
		"nq_client_connections_open" + c:           conns,
		"nq_client_dials_total" + c:                conns,
		"nq_client_dial_failures_total" + c:        0,
		"nq_client_connections_opened_total" + c:   conns,
		"nq_client_connections_closed_total" + c:   0,
		"nq_client_frames_sent_total" + c:          total,
		"nq_client_frames_received_total" + c:      total,
		"nq_client_frames_held_total" + c:          0,
	}
	for k, w := range want {
		got, ok := samples[k]
		switch {
		case !ok:
			t.Errorf("no sample %s", k)
		case got != w:
			t.Errorf("%s = %v, want %v", k, got, w)
		}
	}
	// memconn keeps transport counters: every nq_*_transport_* counter is there too (their values
	// depend on the packets the handshakes took; the metrics package tests them).
	transport := 0
	for k := range samples {
		if strings.Contains(k, "_transport_") {
			transport++
		}
	}
	if want, got := 2*10, transport; got != want {
		t.Errorf("scrape has %d transport samples, want %d", got, want)
	}
	if len(samples) != len(want)+transport {
		t.Errorf("scrape has %d samples, want %d: %v", len(samples), len(want)+transport, samples)
	}
	if _, err := scrapeSamples(ctx, hc, url); err == nil {
		t.Errorf("%s still served after the run", url)
	}
}

// TestRunWithoutMetrics: without -metrics, the report says nothing about metrics.
func TestRunWithoutMetrics(t *testing.T) {
	var out bytes.Buffer
	cfg := config{Transport: "memconn", Conns: 1, Calls: 10, Window: 2, Timeout: 20 * time.Second}
	if err := run(context.Background(), cfg, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "metrics") {
		t.Errorf("report mentions metrics without -metrics:\n%s", out.String())
	}
}

func TestMetricsConfig(t *testing.T) {
	for _, addr := range []string{"9464", "localhost", "http://127.0.0.1:9464/metrics"} {
		err := run(context.Background(), config{Metrics: addr}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "metrics address") {
			t.Errorf("run with -metrics %q = %v, want a config error naming the metrics address", addr, err)
		}
	}
	// An address that cannot be bound fails before any workload runs.
	var out bytes.Buffer
	err := run(context.Background(), config{Transport: "memconn", Conns: 1, Calls: 1, Metrics: "192.0.2.1:0"}, &out)
	if err == nil || !strings.Contains(err.Error(), "metrics: listen 192.0.2.1:0") {
		t.Errorf("run with an address not on this machine = %v, want a listen error", err)
	}
	if strings.Contains(out.String(), "calls ") {
		t.Errorf("a workload ran although the metrics address could not be bound:\n%s", out.String())
	}
}
