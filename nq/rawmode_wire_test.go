package nq_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/wire"
	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/quic"
)

// TestRawModeWire checks raw mode on the wire against hand-written quic-go peers: a raw-mode
// server takes a stream's first bytes as records (no name preamble) and its answers carry none;
// a raw-mode client's stream starts with its first record.
func TestRawModeWire(t *testing.T) {
	e := envs(t)[0](t)
	t.Run("server", func(t *testing.T) {
		addr := startEchoServer(t, e, echoMux(t, "sst"), 0)
		qc := rawDial(t, addr)
		s := rawStream(t, qc, "", wire.AppendRecord(nil, []byte("hoge")))
		_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := wire.NewReader(s, 0, 0).NextRecord()
		if err != nil || string(got) != "hogehoge" {
			t.Fatalf("answer %q (%v), want %q", got, err, "hogehoge")
		}
	})
	t.Run("client", func(t *testing.T) {
		tlsConf := certs(t).ServerTLS()
		tlsConf.NextProtos = []string{quic.ALPN}
		ln, err := quicgo.ListenAddr("127.0.0.1:0", tlsConf, quic.ServerConfig())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		// The peer reads the first record of the first stream, checks it is the whole stream
		// start, and answers it doubled.
		first := make(chan []byte, 1)
		go func() {
			defer close(first)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			qc, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			s, err := qc.AcceptStream(ctx)
			if err != nil {
				return
			}
			_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
			start := make([]byte, 5)
			if _, err := io.ReadFull(s, start); err != nil {
				return
			}
			first <- start
			rec, _, _ := wire.ParseRecord(start, 0)
			s.Write(wire.AppendRecord(nil, bytes.Repeat(rec, 2)))
			<-qc.Context().Done()
		}()

		got := make(chan string, 1)
		cmux := nq.NewMux()
		err = errors.Join(
			nq.HandleRecords(cmux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{
				OnRecord: func(_ *nq.RecordStream[[]byte], v []byte) { got <- string(v) },
			}),
			cmux.SetRawMode("sst"),
		)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := newClient(t, e, clientOptions{mux: cmux}).Dial(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		rs, err := nq.OpenRecords[[]byte](ctx, conn, "sst")
		if err != nil {
			t.Fatal(err)
		}
		if err := rs.Send([]byte("hoge")); err != nil {
			t.Fatal(err)
		}
		start := waitFor(t, first, 5*time.Second, "the peer to read the stream's first bytes")
		if want := wire.AppendRecord(nil, []byte("hoge")); !bytes.Equal(start, want) {
			t.Fatalf("the stream starts with %x, want the record %x and no preamble", start, want)
		}
		if v := waitFor(t, got, 5*time.Second, "the peer's answer"); v != "hogehoge" {
			t.Fatalf("answer %q, want %q", v, "hogehoge")
		}
	})
}
