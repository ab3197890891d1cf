package nq_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
)

// Room protocol methods (naquid's roomsv/roomcl).
const (
	mBcastJoin   = 8
	mBcastReply  = 9
	mBcast       = 10001 // notify: ask the server to broadcast
	mBcastNotify = 10002 // notify from the server: [member id, next value]
)

// roomServer keeps, per member, the highest value the member acknowledged and its current stream.
type roomServer struct {
	t       *testing.T
	mu      sync.Mutex
	members map[uint64]*roomMember
}

type roomMember struct {
	acked  uint64
	atJoin uint64
	stream *nq.RPCStream
}

func (rs *roomServer) handler() nq.RPCHandler {
	return nq.RPCHandler{
		OnRequest: rs.request,
		OnNotify: func(s *nq.RPCStream, method uint32, payload []byte) {
			if method != mBcast {
				rs.t.Errorf("room: unexpected notify %d", method)
				return
			}
			rs.broadcast()
		},
		OnClose: func(s *nq.RPCStream, err error) {
			rs.mu.Lock()
			defer rs.mu.Unlock()
			for id, m := range rs.members {
				if m.stream == s {
					if m.acked == m.atJoin {
						rs.t.Errorf("room: member %d left without acknowledging a broadcast", id)
					}
					m.stream = nil
				}
			}
		},
	}
}

func (rs *roomServer) request(req *nq.Request) {
	switch req.Method {
	case mBcastJoin:
		id := binary.BigEndian.Uint64(req.Payload)
		rs.mu.Lock()
		m := rs.members[id]
		if m == nil {
			m = &roomMember{}
			rs.members[id] = m
		}
		m.stream = req.Stream()
		m.atJoin = m.acked
		acked := m.acked
		rs.mu.Unlock()
		req.Reply(be64(acked))
	case mBcastReply:
		id := binary.BigEndian.Uint64(req.Payload)
		acked := binary.BigEndian.Uint64(req.Payload[8:])
		flag := req.Payload[16]
		rs.mu.Lock()
		m := rs.members[id]
		if m == nil || acked != m.acked+1 {
			rs.t.Errorf("room: member %d acknowledged %d after %v", id, acked, m)
		} else {
			m.acked = acked
		}
		rs.mu.Unlock()
		if flag == 0 {
			req.Conn().Close() // server-initiated close: the client's call fails with ErrConnLost
			return
		}
		req.Reply(nil)
	default:
		req.Fail(fmt.Errorf("room: unknown method %d", req.Method))
	}
}

// broadcast tells every member with a live stream its own next value.
func (rs *roomServer) broadcast() {
	rs.mu.Lock()
	type target struct {
		s       *nq.RPCStream
		payload []byte
	}
	targets := make([]target, 0, len(rs.members))
	for id, m := range rs.members {
		if m.stream != nil {
			p := binary.BigEndian.AppendUint64(be64(id), m.acked+1)
			targets = append(targets, target{m.stream, p})
		}
	}
	rs.mu.Unlock()
	for _, tg := range targets {
		tg.s.Notify(mBcastNotify, tg.payload) // a stream closing meanwhile is fine
	}
}

// roomClient is one member: it joins, waits for its broadcast, acknowledges it, and disconnects
// (client- or server-initiated at random) until it has acknowledged `rounds` values.
type roomClient struct {
	t       *testing.T
	id      uint64
	rounds  uint64
	rng     *rand.Rand
	mu      sync.Mutex
	local   uint64
	waiting bool
	finish  bool
}

func (rc *roomClient) onOpen(c *nq.Conn) {
	// Open the stream here, in the hook: it then belongs to this generation, and a goroutine
	// that runs late cannot act on a later one.
	ctx, cancel := context.WithTimeout(c.Context(), 60*time.Second)
	s, err := c.OpenRPC(ctx, "rpc")
	if err != nil {
		cancel()
		if !errors.Is(err, nq.ErrConnLost) && !errors.Is(err, nq.ErrClosed) {
			rc.t.Errorf("member %d: open: %v", rc.id, err)
		}
		return
	}
	go func() {
		defer cancel()
		reply, err := s.Call(ctx, mBcastJoin, be64(rc.id))
		if err != nil {
			if !errors.Is(err, nq.ErrConnLost) && !errors.Is(err, nq.ErrClosed) {
				rc.t.Errorf("member %d: join: %v", rc.id, err)
			}
			return
		}
		server := binary.BigEndian.Uint64(reply)
		rc.mu.Lock()
		if rc.local > server {
			rc.t.Errorf("member %d: local value %d ahead of the server's %d", rc.id, rc.local, server)
		}
		rc.local = server
		rc.waiting = true
		rc.mu.Unlock()
		if err := s.Notify(mBcast, nil); err != nil && !errors.Is(err, nq.ErrConnLost) {
			rc.t.Errorf("member %d: bcast: %v", rc.id, err)
		}
	}()
}

func (rc *roomClient) onNotify(s *nq.RPCStream, method uint32, payload []byte) {
	if method != mBcastNotify || len(payload) != 16 || binary.BigEndian.Uint64(payload) != rc.id {
		rc.t.Errorf("member %d: bad notify %d %x", rc.id, method, payload)
		return
	}
	value := binary.BigEndian.Uint64(payload[8:])
	rc.mu.Lock()
	if value <= rc.local || !rc.waiting {
		rc.mu.Unlock()
		return // stale, or already handled in this session
	}
	if value != rc.local+1 {
		rc.t.Errorf("member %d: broadcast %d after %d", rc.id, value, rc.local)
	}
	rc.local = value
	rc.waiting = false
	flag := byte(rc.rng.IntN(2))
	if value >= rc.rounds {
		flag, rc.finish = 1, true
	}
	finish := rc.finish
	rc.mu.Unlock()
	conn := s.Conn()
	payload = binary.BigEndian.AppendUint64(be64(rc.id), value)
	payload = append(payload, flag)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	err := s.Go(ctx, mBcastReply, payload, func(_ []byte, err error) {
		cancel()
		switch {
		case err == nil && finish:
			conn.Close()
		case err == nil:
			conn.Reset()
		case flag == 0 && errors.Is(err, nq.ErrConnLost):
			// the server closed the connection, as asked
		default:
			rc.t.Errorf("member %d: reply %d: %v", rc.id, value, err)
		}
	})
	if err != nil {
		cancel()
		rc.t.Errorf("member %d: send reply: %v", rc.id, err)
	}
}

// TestRoom: many clients reconnect again and again (client- and server-initiated closes mixed),
// each time re-joining a room and receiving broadcasts; every value is acknowledged exactly once
// and in order, across reconnects.
func TestRoom(t *testing.T) {
	clients, rounds := 256, uint64(10)
	if testing.Short() {
		clients, rounds = 32, 5
	}
	forEachEnv(t, func(t *testing.T, e *env) {
		rs := &roomServer{t: t, members: make(map[uint64]*roomMember)}
		mux := nq.NewMux()
		if err := mux.HandleRPC("rpc", rs.handler()); err != nil {
			t.Fatal(err)
		}
		srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: e.serverFactory, QUIC: patientQUIC(true)}
		if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })

		var finalized atomic.Int32
		allDone := make(chan struct{})
		var reconnects atomic.Int64
		members := make([]*roomClient, clients)
		for i := range members {
			rc := &roomClient{t: t, id: uint64(i + 1), rounds: rounds, rng: rand.New(rand.NewPCG(uint64(i), 42))}
			members[i] = rc
			cmux := nq.NewMux()
			if err := cmux.HandleRPC("rpc", nq.RPCHandler{OnNotify: rc.onNotify}); err != nil {
				t.Fatal(err)
			}
			cl := newClient(t, e, clientOptions{
				quic:   patientQUIC(false),
				mux:    cmux,
				onOpen: rc.onOpen,
				onClose: func(*nq.Conn, error, int) time.Duration {
					reconnects.Add(1)
					return 10 * time.Millisecond
				},
				onFinalize: func(*nq.Conn) {
					if int(finalized.Add(1)) == clients {
						close(allDone)
					}
				},
			})
			if _, err := cl.Connect(srv.Addr().String()); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		waitFor(t, allDone, 240*time.Second, "every member to finish")
		for _, rc := range members {
			rc.mu.Lock()
			if rc.local != rounds {
				t.Errorf("member %d finished at %d, want %d", rc.id, rc.local, rounds)
			}
			rc.mu.Unlock()
		}
		t.Logf("%d clients finished %d rounds in %v with %d reconnects", clients, rounds, time.Since(start).Round(time.Millisecond), reconnects.Load())
	})
}
