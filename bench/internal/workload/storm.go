package workload

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/bench/internal/measure"
	"github.com/naquid/naquid/bench/internal/stack"
	"github.com/naquid/naquid/nq"
)

// Storm variants.
const (
	StormResume = "resume" // the restarted server accepts the clients' session tickets and tokens
	StormFull   = "full"   // it has no ticket keys: clients make full handshakes
)

// StormConfig is the storm workload. The zero value is 10 000 clients restarting with and then
// without resumption, with nq's default reconnect back-off, 30 s allowed for each recovery.
type StormConfig struct {
	// Conns is the number of client connections (K). Default 10000.
	Conns int
	// Variants are the restarts to make, in order: StormResume (the restarted server keeps its
	// session ticket keys and address-validation token key, so clients resume without a Retry
	// round trip) and StormFull (it has neither: every client makes a full handshake, after a
	// Retry while attempts come faster than the server's RetryAbove). Default both, resume first.
	Variants []string
	// Spread, when positive, replaces nq's default reconnect back-off (which waits 0.5 to 1 s
	// after a server shutdown) with a wait drawn uniformly from [0, Spread).
	Spread time.Duration
	// Recovery bounds the wait for the clients after each restart. Default 30 s.
	Recovery time.Duration
	// PerSocket is reported with the result (the stack was configured with it).
	PerSocket int
}

func (c StormConfig) withDefaults() StormConfig {
	if c.Conns == 0 {
		c.Conns = 10000
	}
	if len(c.Variants) == 0 {
		c.Variants = []string{StormResume, StormFull}
	}
	if c.Recovery == 0 {
		c.Recovery = 30 * time.Second
	}
	return c
}

func (c StormConfig) validate() error {
	switch {
	case c.Conns < 1:
		return fmt.Errorf("storm: Conns %d: need at least 1", c.Conns)
	case c.Spread < 0:
		return fmt.Errorf("storm: Spread %v is negative", c.Spread)
	case c.Recovery < 0:
		return fmt.Errorf("storm: Recovery %v is negative", c.Recovery)
	}
	for _, v := range c.Variants {
		if v != StormResume && v != StormFull {
			return fmt.Errorf("storm: Variants: %q is not %q or %q", v, StormResume, StormFull)
		}
	}
	return nil
}

// stormRound is one restart and the clients' return from it.
type stormRound struct {
	variant string
	start   time.Time
	back    atomic.Int64
	allBack chan struct{}
	rec     *measure.Recorder
	ends    attemptEnds
}

// RunStorm runs the storm workload on nq: K clients (with session resumption) connect to an
// in-process server, each makes one call (so it holds a session ticket); then, once per
// variant, the server is closed (clients see it shut down) and a new one listens on the same
// address — with the same ticket and token keys (resume) or with tickets disabled and a token
// key of its own (full). Each result is
// the time from a restart (the old server's Close included: clients start reconnecting as soon
// as it closes their connections) until every client is open again.
func RunStorm(ctx context.Context, env Env, scfg stack.Config, cfg StormConfig) ([]Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if env.Addr != "" {
		return nil, errors.New("storm: the server is restarted in this process: Env.Addr must be empty")
	}
	scfg.DisableResumption = false
	ctx, cancel := context.WithTimeout(ctx, env.timeout())
	defer cancel()
	name := env.Stack.Name()

	var resumed, full atomic.Int64
	// The servers of one deployment share their address-validation token key, so that clients
	// coming back to a restarted one (resume) skip the Retry round trip; a new deployment (full)
	// has a key of its own.
	var tokenKey quicgo.TokenGeneratorKey
	crand.Read(tokenKey[:])
	listen := func(addr string, sameDeployment bool) (*nq.Server, error) {
		srv, err := stack.NewNQServer(scfg)
		if err != nil {
			return nil, err
		}
		srv.TLS.SessionTicketsDisabled = !sameDeployment
		if sameDeployment {
			srv.TokenKey = &tokenKey
		}
		srv.TLS.VerifyConnection = func(cs tls.ConnectionState) error {
			if cs.DidResume {
				resumed.Add(1)
			} else {
				full.Add(1)
			}
			return nil
		}
		if err := srv.Listen(ctx, addr); err != nil {
			return nil, fmt.Errorf("storm %s: %w", name, err)
		}
		return srv, nil
	}
	srv, err := listen("127.0.0.1:0", true)
	if err != nil {
		return nil, err
	}
	addr := srv.Addr().String()
	defer func() { _ = srv.Close() }()

	// Clients: each Conn counts its first open after each restart.
	var cur atomic.Pointer[stormRound]
	// Every ended attempt is classified for the round's note; the wait is nq's default back-off
	// or, with Spread, a uniform one.
	onClose := func(_ *nq.Conn, err error, attempt int) time.Duration {
		if r := cur.Load(); r != nil {
			r.ends.count(err)
		}
		if cfg.Spread > 0 {
			return rand.N(cfg.Spread)
		}
		return nq.DefaultBackoff(err, attempt)
	}
	onOpen := func(c *nq.Conn) {
		r := cur.Load()
		sc, _ := c.Value().(*stormConn)
		if r == nil || sc == nil || sc.last.Swap(r) == r {
			return // before the first restart, or already counted in this round
		}
		r.rec.Shard(sc.i).Record(time.Since(r.start))
		if r.back.Add(1) == int64(cfg.Conns) {
			close(r.allBack)
		}
	}
	per := max(scfg.PerSocket, 1)
	clients := make([]*nq.Client, (cfg.Conns+per-1)/per)
	defer func() {
		var wg sync.WaitGroup
		for _, cl := range clients {
			if cl != nil {
				wg.Go(func() { _ = cl.Close() })
			}
		}
		wg.Wait()
	}()
	for i := range clients {
		cl, err := stack.NewNQClient(scfg, onClose)
		if err != nil {
			return nil, err
		}
		cl.OnOpen = onOpen
		clients[i] = cl
	}
	connect := func(i int) (*nq.Conn, error) {
		c, err := clients[i/per].Connect(addr)
		if err != nil {
			return nil, err
		}
		c.SetValue(&stormConn{i: i})
		return c, nil
	}
	refused, err := connectAll(ctx, env, cfg.Conns, connect)
	if err != nil {
		return nil, fmt.Errorf("storm %s: %w", name, err)
	}

	var out []Result
	for n, variant := range cfg.Variants {
		res := Result{Workload: Storm, Stack: name, Variant: variant, Mode: "inproc", Start: time.Now().Unix(), Conns: cfg.Conns, PerSock: cfg.PerSocket}
		if n == 0 && refused > 0 {
			res.AddNote(fmt.Sprintf("%d calls failed while the %d clients first connected (connection refused or lost; they reconnected)", refused, cfg.Conns))
		}
		r := &stormRound{variant: variant, allBack: make(chan struct{}), rec: measure.NewRecorder(16)}
		resumed.Store(0)
		full.Store(0)
		before, err := measure.ProcessUsage()
		if err != nil && !errors.Is(err, measure.ErrUnsupported) {
			return out, err
		}
		dialsBefore := sumDials(clients)
		r.start = time.Now()
		cur.Store(r)
		_ = srv.Close()
		closeTook := time.Since(r.start)
		restarted, err := listen(addr, variant == StormResume)
		if err != nil {
			// srv stays the closed server (Close again is harmless): the variants measured so
			// far are returned with the error.
			return out, fmt.Errorf("storm %s: restart on %s: %w", name, addr, err)
		}
		srv = restarted
		p := measure.StartProgress(env.progress(), fmt.Sprintf("[storm %s %s]", name, variant), time.Second, env.Overwrite,
			func() (int64, int64) { return r.back.Load(), 0 })
		bound := time.NewTimer(cfg.Recovery)
		select {
		case <-r.allBack:
		case <-bound.C:
		case <-ctx.Done():
		}
		bound.Stop()
		elapsed := time.Since(r.start)
		p.Stop()
		after, _ := measure.ProcessUsage()

		res.Seconds = round(elapsed.Seconds(), 3)
		res.RecoverySeconds = res.Seconds
		res.Resumed = resumed.Load()
		res.FullHandshakes = full.Load()
		l := r.rec.Latency()
		res.P50us, res.P99us, res.MaxUs = us(l.P50), us(l.P99), us(l.Max)
		fillCost(&res, before, after, elapsed)
		res.AddNote(fmt.Sprintf("closing the old server took %v", closeTook.Round(time.Millisecond)))
		st := srv.Stats()
		res.AddNote(fmt.Sprintf("%d connection attempts; attempts ended by a handshake timeout %d, by CONNECTION_REFUSED %d, otherwise %d (the old server's shutdown included); the new server asked for %d Retry packets and refused %d Initial packets past MaxHandshakes (quic-go drops such answers beyond a short queue)",
			sumDials(clients)-dialsBefore, r.ends.timeouts.Load(), r.ends.refused.Load(), r.ends.other.Load(), st.Retries, st.HandshakesRefused))
		if missing := int64(cfg.Conns) - r.back.Load(); missing > 0 {
			res.Errors = missing
			res.RecoverySeconds = 0
			res.AddNote(fmt.Sprintf("%d of %d clients were not back %v after the restart", missing, cfg.Conns, elapsed.Round(time.Millisecond)))
		}
		out = append(out, res)
		if ctx.Err() != nil {
			return out, fmt.Errorf("storm %s: %w", name, ctx.Err())
		}
	}
	return out, nil
}

// attemptEnds counts how a round's connection attempts and connections ended.
type attemptEnds struct {
	timeouts, refused, other atomic.Int64
}

func (a *attemptEnds) count(err error) {
	var idle *quicgo.IdleTimeoutError
	var hs *quicgo.HandshakeTimeoutError
	var te *quicgo.TransportError
	switch {
	case errors.As(err, &idle) || errors.As(err, &hs):
		a.timeouts.Add(1)
	case errors.As(err, &te) && te.ErrorCode == quicgo.ConnectionRefused:
		a.refused.Add(1)
	default:
		a.other.Add(1)
	}
}

// sumDials returns the connection attempts of every client so far.
func sumDials(clients []*nq.Client) uint64 {
	var n uint64
	for _, cl := range clients {
		n += cl.Stats().Dials
	}
	return n
}

// stormConn is the storm's state of one client Conn (its Value).
type stormConn struct {
	i    int
	last atomic.Pointer[stormRound] // the restart it last came back from
}

// connectTries bounds the calls made on one connection before the restart (the run's deadline
// bounds them too).
const connectTries = 50

// connectAll connects n Conns with bounded concurrency and makes one call on each, so that each
// is open and holds a session ticket before the restart. It returns how many first calls failed
// (the connection was refused or lost, and reconnected).
func connectAll(ctx context.Context, env Env, n int, connect func(i int) (*nq.Conn, error)) (int64, error) {
	var (
		refused    atomic.Int64
		next, done atomic.Int64
		wg         sync.WaitGroup
		mu         sync.Mutex
		first      error
	)
	p := measure.StartProgress(env.progress(), fmt.Sprintf("[connect %s x%d]", env.Stack.Name(), n), time.Second, env.Overwrite,
		func() (int64, int64) { return done.Load(), 0 })
	defer p.Stop()
	for range min(env.dialConcurrency(), n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := connect(i)
				if err == nil {
					// A connection refused or lost here reconnects by itself: call again.
					for try := 0; try < connectTries; try++ {
						if _, err = c.RPC(stack.RPCName).Call(ctx, 1, []byte{1}); err == nil || ctx.Err() != nil {
							break
						}
						refused.Add(1)
					}
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return refused.Load(), first
}
