package nq_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/tools/certs/devcert"
)

// TestReliabilityTLS: a client verifies the server's chain and host name by default. A wrong
// host, an unknown CA and an expired certificate each fail the connection, and the client's close
// hook gets an error that names the cause (errors.As finds *tls.CertificateVerificationError and
// the x509 error inside). Turning verification off needs InsecureSkipVerify, which connects and
// logs one warning per Client.
func TestReliabilityTLS(t *testing.T) {
	e := envs(t)[1](t) // memconn: no kernel sockets needed
	good := certs(t)
	other, err := devcert.New(devcert.Options{Hosts: []string{"localhost"}, CACommonName: "some other CA"})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := devcert.New(devcert.Options{
		Hosts:     []string{"localhost"},
		NotBefore: time.Now().Add(-48 * time.Hour),
		Validity:  time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		server *devcert.Bundle
		client *tls.Config
		check  func(t *testing.T, err error)
	}{
		{"wrong host", good, good.ClientTLS("game.example.com"), func(t *testing.T, err error) {
			var he x509.HostnameError
			if !errors.As(err, &he) || he.Host != "game.example.com" {
				t.Errorf("want an x509.HostnameError for game.example.com, got %v", err)
			}
		}},
		{"unknown CA", other, good.ClientTLS("localhost"), func(t *testing.T, err error) {
			var ue x509.UnknownAuthorityError
			if !errors.As(err, &ue) {
				t.Errorf("want an x509.UnknownAuthorityError, got %v", err)
			}
		}},
		{"expired", expired, expired.ClientTLS("localhost"), func(t *testing.T, err error) {
			var ie x509.CertificateInvalidError
			if !errors.As(err, &ie) || ie.Reason != x509.Expired {
				t.Errorf("want an x509.CertificateInvalidError (Expired), got %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startTLSServer(t, e, tc.server)
			closed := make(chan error, 1)
			cl := &nq.Client{
				TLS:       tc.client,
				Transport: e.clientFactory,
				LocalAddr: e.clientLocal,
				OnClose: func(_ *nq.Conn, err error, _ int) time.Duration {
					closed <- err
					return nq.NoReconnect
				},
			}
			t.Cleanup(func() { cl.Close() })
			if _, err := cl.Connect(addr); err != nil {
				t.Fatal(err)
			}
			err := waitFor(t, closed, 20*time.Second, "the failed handshake")
			if err == nil {
				t.Fatal("the close hook got a nil error")
			}
			var cve *tls.CertificateVerificationError
			if !errors.As(err, &cve) {
				t.Errorf("errors.As(*tls.CertificateVerificationError) fails on %v", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "certificate") {
				t.Errorf("error text %q does not say it is about the certificate", msg)
			}
			tc.check(t, err)
			t.Logf("close hook error: %v", err)
		})
	}

	t.Run("InsecureSkipVerify", func(t *testing.T) {
		addr := startTLSServer(t, e, other) // a CA the client does not know
		logs := &captureHandler{}
		mux := nq.NewMux()
		if err := mux.HandleRPC("rpc", nq.RPCHandler{}); err != nil {
			t.Fatal(err)
		}
		for _, viaDefault := range []bool{false, true} {
			cl := &nq.Client{
				TLS:       &tls.Config{InsecureSkipVerify: true},
				Mux:       mux,
				Transport: e.clientFactory,
				LocalAddr: e.clientLocal,
			}
			if viaDefault {
				prev := slog.Default()
				slog.SetDefault(slog.New(logs))
				t.Cleanup(func() { slog.SetDefault(prev) })
			} else {
				cl.Logger = slog.New(logs)
			}
			t.Cleanup(func() { cl.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for range 2 { // two Conns, one warning
				c, err := cl.Dial(ctx, addr)
				if err != nil {
					t.Fatalf("dial with InsecureSkipVerify: %v", err)
				}
				if reply, err := c.RPC("rpc").Call(ctx, mPing, []byte("x")); err != nil || string(reply) != "x" {
					t.Fatalf("call with InsecureSkipVerify: reply %q, err %v", reply, err)
				}
			}
			cl.Close()
		}
		if got := logs.count(slog.LevelWarn, "InsecureSkipVerify"); got != 2 {
			t.Errorf("%d warnings naming InsecureSkipVerify (one per Client, via Logger and via slog.Default), want 2; logs: %q",
				got, logs.all())
		}
	})
}

// startTLSServer starts a server presenting b's leaf and returns its address.
func startTLSServer(t *testing.T, e *env, b *devcert.Bundle) string {
	t.Helper()
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) { req.Reply(req.Payload) }}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: b.ServerTLS(), Mux: mux, Transport: e.serverFactory}
	if err := srv.Listen(context.Background(), "192.0.2.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.Addr().String()
}

// captureHandler is a slog.Handler that keeps every record.
type captureHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}

func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

// count returns the records at level whose message contains substr.
func (h *captureHandler) count(level slog.Level, substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level == level && strings.Contains(r.Message, substr) {
			n++
		}
	}
	return n
}

func (h *captureHandler) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.records))
	for _, r := range h.records {
		out = append(out, r.Level.String()+" "+r.Message)
	}
	return out
}
