package nq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"testing"

	quicgo "github.com/quic-go/quic-go"
)

// TestTicketGuard: a deletion crypto/tls makes during a failed resumed handshake is carried out
// only when the failure may be the ticket's fault (a TLS alert) or the handshake completed.
func TestTicketGuard(t *testing.T) {
	const key = "game.example.test"
	tests := []struct {
		name string
		err  error
		keep bool
	}{
		{"handshake completed", nil, false},
		{"handshake timeout", &quicgo.HandshakeTimeoutError{}, true},
		{"idle timeout", &quicgo.IdleTimeoutError{}, true},
		{"refused by the server", &quicgo.TransportError{Remote: true, ErrorCode: quicgo.ConnectionRefused}, true},
		{"server shutting down", &quicgo.ApplicationError{Remote: true, ErrorCode: 1}, true},
		{"dial cancelled", context.Canceled, true},
		{"wrapped timeout", fmt.Errorf("nq: dial: %w", &quicgo.IdleTimeoutError{}), true},
		{"TLS alert from the server", &quicgo.TransportError{Remote: true, ErrorCode: 0x100 + 51}, false},
		{"TLS failure here", fmt.Errorf("dial: %w", &quicgo.TransportError{ErrorCode: 0x100 + 42}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := tls.NewLRUClientSessionCache(0)
			ticket := &tls.ClientSessionState{}
			cache.Put(key, ticket)
			g := newTicketGuard(cache)
			if cs, ok := g.Get(key); !ok || cs != ticket {
				t.Fatal("Get does not return the Client's cached session")
			}
			g.Put(key, nil) // crypto/tls after a failed resumed handshake
			if cs, ok := cache.Get(key); !ok || cs != ticket {
				t.Fatal("the deletion reached the cache before the attempt was settled")
			}
			g.settle(tt.err)
			cs, ok := cache.Get(key)
			if kept := ok && cs == ticket; kept != tt.keep {
				t.Fatalf("after settle(%v): ticket kept %v, want %v", tt.err, kept, tt.keep)
			}
			g.settle(errors.New("a second settle")) // the first decides
			if cs2, ok2 := cache.Get(key); ok2 != ok || cs2 != cs {
				t.Fatal("a second settle changed the cache")
			}
		})
	}
}

// TestTicketGuardNewerTicket: a held deletion never removes a ticket stored after it (by another
// connection sharing the cache); stores and deletions after settle pass straight through.
func TestTicketGuardNewerTicket(t *testing.T) {
	const key = "game.example.test"
	cache := tls.NewLRUClientSessionCache(0)
	old, newer := &tls.ClientSessionState{}, &tls.ClientSessionState{}
	cache.Put(key, old)
	g := newTicketGuard(cache)
	g.Put(key, nil)
	cache.Put(key, newer)
	g.settle(nil)
	if cs, ok := cache.Get(key); !ok || cs != newer {
		t.Fatal("the held deletion removed a newer ticket")
	}
	g.Put("other", nil) // nothing cached: nothing to hold or delete
	g.Put(key, old)
	if cs, _ := cache.Get(key); cs != old {
		t.Fatal("a store through the guard did not reach the cache")
	}
	g.Put(key, nil)
	if _, ok := cache.Get(key); ok {
		t.Fatal("a deletion after settle was held")
	}
}
