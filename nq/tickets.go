package nq

import (
	"crypto/tls"
	"errors"
	"sync"

	quicgo "github.com/quic-go/quic-go"
)

// ticketGuard is the session cache of one connection attempt. It passes everything to the
// Client's cache except the deletion crypto/tls makes when a resumed handshake fails for any
// reason: that one is held back until the attempt's outcome is known (settle). A handshake that
// timed out, was refused (Server.MaxHandshakes), hit a server shutting down or was cancelled says
// nothing against the ticket, and dropping it would turn the next attempt into a full handshake,
// which costs the server a certificate signature: exactly what a server busy with a reconnect
// storm after a restart cannot spare. Only a TLS failure (a QUIC crypto error, such as the
// server refusing a corrupted PSK) deletes the ticket, as crypto/tls intends.
type ticketGuard struct {
	cache tls.ClientSessionCache

	mu      sync.Mutex
	settled bool
	held    map[string]*tls.ClientSessionState // key -> the session the deletion would remove
}

func newTicketGuard(cache tls.ClientSessionCache) *ticketGuard {
	return &ticketGuard{cache: cache}
}

// Get returns the Client's cached session for key.
func (g *ticketGuard) Get(key string) (*tls.ClientSessionState, bool) {
	return g.cache.Get(key)
}

// Put stores cs for key in the Client's cache; a deletion (cs nil) made before settle is held.
func (g *ticketGuard) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		g.cache.Put(key, cs)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.settled {
		g.cache.Put(key, nil)
		return
	}
	old, ok := g.cache.Get(key)
	if !ok || old == nil {
		return
	}
	if g.held == nil {
		g.held = make(map[string]*tls.ClientSessionState, 1)
	}
	g.held[key] = old
}

// settle ends the attempt with its handshake's outcome (nil: it completed). Held deletions are
// carried out after a success or a TLS failure, and dropped otherwise. A deletion is carried out
// only while the cache still holds the session it was about (another connection may have stored
// a newer ticket meanwhile). settle may be called more than once; the first call decides.
func (g *ticketGuard) settle(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.settled {
		return
	}
	g.settled = true
	held := g.held
	g.held = nil
	if err != nil && !rejectsTicket(err) {
		return
	}
	for key, old := range held {
		if cur, ok := g.cache.Get(key); ok && cur == old {
			g.cache.Put(key, nil)
		}
	}
}

// rejectsTicket reports whether a failed handshake may be the session ticket's fault: a TLS
// alert, sent or received (QUIC crypto error codes 0x100-0x1ff).
func rejectsTicket(err error) bool {
	var te *quicgo.TransportError
	return errors.As(err, &te) && te.ErrorCode.IsCryptoError()
}
