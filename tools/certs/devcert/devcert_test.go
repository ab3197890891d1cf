package devcert

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var allKeyTypes = []KeyType{ECDSAP256, RSA2048, Ed25519}

// testHosts mixes DNS names, a wildcard, IPv4 and IPv6 (TEST-NET and documentation ranges).
var testHosts = []string{"localhost", "game.example.test", "*.shard.example.test", "127.0.0.1", "192.0.2.7", "::1", "2001:db8::7"}

var (
	bundlesMu sync.Mutex
	bundles   = map[KeyType]*Bundle{}
)

// bundleFor returns a bundle for testHosts with key type kt, made once per test binary: RSA key
// generation is slow under -race.
func bundleFor(t *testing.T, kt KeyType) *Bundle {
	t.Helper()
	bundlesMu.Lock()
	defer bundlesMu.Unlock()
	if b, ok := bundles[kt]; ok {
		return b
	}
	b, err := New(Options{Hosts: testHosts, KeyType: kt})
	if err != nil {
		t.Fatalf("New(%s): %v", kt, err)
	}
	bundles[kt] = b
	return b
}

func TestNewDefaults(t *testing.T) {
	before := time.Now()
	b, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Leaf.DNSNames, []string{"localhost"}; !slices.Equal(got, want) {
		t.Errorf("DNSNames = %q, want %q", got, want)
	}
	var ips []string
	for _, ip := range b.Leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"127.0.0.1", "::1"}; !slices.Equal(ips, want) {
		t.Errorf("IPAddresses = %q, want %q", ips, want)
	}
	if _, ok := b.LeafKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("leaf key is %T, want *ecdsa.PrivateKey", b.LeafKey)
	}
	for _, c := range []*x509.Certificate{b.CA, b.Leaf} {
		if got := c.NotAfter.Sub(c.NotBefore); got != DefaultValidity {
			t.Errorf("%s: validity %v, want %v", c.Subject.CommonName, got, DefaultValidity)
		}
		// NotBefore is truncated to the second: allow that much slack.
		lo := before.Add(-DefaultBackdate - time.Second)
		hi := time.Now().Add(-DefaultBackdate)
		if c.NotBefore.Before(lo) || c.NotBefore.After(hi) {
			t.Errorf("%s: NotBefore %v, want within [%v, %v]", c.Subject.CommonName, c.NotBefore, lo, hi)
		}
	}
	if got := b.Leaf.Subject.CommonName; got != "localhost" {
		t.Errorf("leaf CommonName = %q, want localhost", got)
	}
	if got := b.CA.Subject.CommonName; got != DefaultCACommonName {
		t.Errorf("CA CommonName = %q, want %q", got, DefaultCACommonName)
	}
}

func TestNewOptionsApplied(t *testing.T) {
	notBefore := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	b, err := New(Options{
		Hosts:        []string{"192.0.2.1", "Game.Example.Test", "game.example.test", "192.0.2.1", "::ffff:192.0.2.1", "game.example.test."},
		KeyType:      Ed25519,
		Validity:     48 * time.Hour,
		NotBefore:    notBefore,
		CommonName:   "leaf name",
		CACommonName: "ca name",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Leaf.DNSNames, []string{"Game.Example.Test"}; !slices.Equal(got, want) {
		t.Errorf("DNSNames = %q, want %q (duplicates dropped, case-insensitively)", got, want)
	}
	if len(b.Leaf.IPAddresses) != 1 || b.Leaf.IPAddresses[0].String() != "192.0.2.1" {
		t.Errorf("IPAddresses = %v, want [192.0.2.1]", b.Leaf.IPAddresses)
	}
	if !b.Leaf.NotBefore.Equal(notBefore) || !b.Leaf.NotAfter.Equal(notBefore.Add(48*time.Hour)) {
		t.Errorf("leaf validity %v..%v, want %v..+48h", b.Leaf.NotBefore, b.Leaf.NotAfter, notBefore)
	}
	if b.Leaf.Subject.CommonName != "leaf name" || b.CA.Subject.CommonName != "ca name" {
		t.Errorf("common names %q, %q", b.Leaf.Subject.CommonName, b.CA.Subject.CommonName)
	}
	if _, ok := b.LeafKey.(ed25519.PrivateKey); !ok {
		t.Errorf("leaf key is %T, want ed25519.PrivateKey", b.LeafKey)
	}

	onlyIP, err := New(Options{Hosts: []string{"198.51.100.4"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := onlyIP.Leaf.Subject.CommonName; got != "198.51.100.4" {
		t.Errorf("IP-only leaf CommonName = %q, want the IP", got)
	}
}

func TestCertificateFields(t *testing.T) {
	for _, kt := range allKeyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			b := bundleFor(t, kt)
			ca, leaf := b.CA, b.Leaf
			if !ca.IsCA || !ca.BasicConstraintsValid {
				t.Error("CA: IsCA or BasicConstraintsValid not set")
			}
			if ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
				t.Errorf("CA: MaxPathLen %d, MaxPathLenZero %v; want 0, true", ca.MaxPathLen, ca.MaxPathLenZero)
			}
			if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; ca.KeyUsage != want {
				t.Errorf("CA: KeyUsage %b, want %b", ca.KeyUsage, want)
			}
			if err := ca.CheckSignatureFrom(ca); err != nil {
				t.Errorf("CA is not self-signed: %v", err)
			}
			if leaf.IsCA {
				t.Error("leaf: IsCA set")
			}
			if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
				t.Error("leaf: no digitalSignature key usage")
			}
			eku := leaf.ExtKeyUsage
			if len(eku) != 2 || eku[0] != x509.ExtKeyUsageServerAuth || eku[1] != x509.ExtKeyUsageClientAuth {
				t.Errorf("leaf: ExtKeyUsage %v, want serverAuth, clientAuth", eku)
			}
			if len(ca.SubjectKeyId) == 0 || len(leaf.SubjectKeyId) == 0 {
				t.Error("missing SubjectKeyId")
			}
			if bytes.Equal(ca.SubjectKeyId, leaf.SubjectKeyId) {
				t.Error("CA and leaf share a SubjectKeyId")
			}
			if !bytes.Equal(leaf.AuthorityKeyId, ca.SubjectKeyId) {
				t.Errorf("leaf AuthorityKeyId %x != CA SubjectKeyId %x", leaf.AuthorityKeyId, ca.SubjectKeyId)
			}
			if got, want := len(leaf.DNSNames)+len(leaf.IPAddresses), len(testHosts); got != want {
				t.Errorf("leaf has %d SANs, want %d", got, want)
			}
			wantKey := map[KeyType]string{ECDSAP256: "*ecdsa.PrivateKey", RSA2048: "*rsa.PrivateKey", Ed25519: "ed25519.PrivateKey"}[kt]
			var gotKey string
			switch k := b.LeafKey.(type) {
			case *ecdsa.PrivateKey:
				gotKey = "*ecdsa.PrivateKey"
			case *rsa.PrivateKey:
				gotKey = "*rsa.PrivateKey"
				if k.N.BitLen() != 2048 {
					t.Errorf("RSA key has %d bits", k.N.BitLen())
				}
			case ed25519.PrivateKey:
				gotKey = "ed25519.PrivateKey"
			}
			if gotKey != wantKey {
				t.Errorf("leaf key %T, want %s", b.LeafKey, wantKey)
			}
		})
	}
}

// TestChainVerifies checks the leaf against the CA pool for every host it names and both
// extended key usages.
func TestChainVerifies(t *testing.T) {
	for _, kt := range allKeyTypes {
		b := bundleFor(t, kt)
		for _, host := range append([]string{"any.shard.example.test"}, testHosts...) {
			if strings.HasPrefix(host, "*.") {
				continue // a wildcard is a pattern, not a name to dial
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				chains, err := b.Leaf.Verify(x509.VerifyOptions{Roots: b.CertPool(), DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}})
				if err != nil {
					t.Errorf("%s: Verify(%q, usage %v): %v", kt, host, usage, err)
					continue
				}
				if len(chains) != 1 || len(chains[0]) != 2 || !chains[0][1].Equal(b.CA) {
					t.Errorf("%s: Verify(%q): unexpected chains %v", kt, host, chains)
				}
			}
		}
	}
}

// handshake runs a TLS handshake between server and client configurations over net.Pipe and
// returns the client's error and connection state. It never takes more than 10 seconds.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	sc, cc := net.Pipe()
	t.Cleanup(func() { _ = sc.Close(); _ = cc.Close() })
	deadline, _ := ctx.Deadline()
	if err := sc.SetDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	if err := cc.SetDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	srv := tls.Server(sc, server)
	serverDone := make(chan error, 1)
	go func() { serverDone <- srv.HandshakeContext(ctx) }()
	cli := tls.Client(cc, client)
	err := cli.HandshakeContext(ctx)
	state := cli.ConnectionState()
	// Closing the client's pipe end (not the tls.Conn, whose close_notify would wait for a reader)
	// unblocks a server still waiting after a failed handshake.
	_ = cc.Close()
	serr := <-serverDone
	if err == nil && serr != nil {
		t.Errorf("client handshake succeeded but server failed: %v", serr)
	}
	return state, err
}

func TestHandshake(t *testing.T) {
	for _, kt := range allKeyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			b := bundleFor(t, kt)
			for _, host := range []string{"game.example.test", "192.0.2.7", "2001:db8::7"} {
				state, err := handshake(t, b.ServerTLS(), b.ClientTLS(host))
				if err != nil {
					t.Fatalf("handshake for %q: %v", host, err)
				}
				if state.Version != tls.VersionTLS13 {
					t.Errorf("version %x, want TLS 1.3", state.Version)
				}
				if len(state.VerifiedChains) != 1 || !state.VerifiedChains[0][0].Equal(b.Leaf) {
					t.Errorf("verified chains %v, want the leaf", state.VerifiedChains)
				}
				if len(state.PeerCertificates) != 1 {
					t.Errorf("server sent %d certificates, want the leaf alone", len(state.PeerCertificates))
				}
			}
		})
	}
}

func TestMutualTLS(t *testing.T) {
	b := bundleFor(t, ECDSAP256)
	server := b.ServerTLS()
	server.ClientAuth = tls.RequireAndVerifyClientCert
	server.ClientCAs = b.CertPool()
	client := b.ClientTLS("localhost")
	client.Certificates = []tls.Certificate{b.TLSCertificate()}
	if _, err := handshake(t, server, client); err != nil {
		t.Fatalf("mutual TLS handshake: %v", err)
	}
}

func TestHandshakeRejects(t *testing.T) {
	b := bundleFor(t, ECDSAP256)
	other := bundleFor(t, Ed25519)
	expired, err := New(Options{NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		server *tls.Config
		client *tls.Config
		check  func(t *testing.T, err error)
	}{
		{"wrong host", b.ServerTLS(), b.ClientTLS("elsewhere.example.test"), func(t *testing.T, err error) {
			var he x509.HostnameError
			if !errors.As(err, &he) {
				t.Fatalf("error %v (%T) is not an x509.HostnameError", err, err)
			}
			if he.Host != "elsewhere.example.test" {
				t.Errorf("HostnameError.Host = %q", he.Host)
			}
		}},
		{"wrong IP", b.ServerTLS(), b.ClientTLS("203.0.113.9"), func(t *testing.T, err error) {
			var he x509.HostnameError
			if !errors.As(err, &he) {
				t.Fatalf("error %v (%T) is not an x509.HostnameError", err, err)
			}
		}},
		{"unknown CA", b.ServerTLS(), other.ClientTLS("localhost"), func(t *testing.T, err error) {
			var ue x509.UnknownAuthorityError
			if !errors.As(err, &ue) {
				t.Fatalf("error %v (%T) is not an x509.UnknownAuthorityError", err, err)
			}
		}},
		{"expired leaf", expired.ServerTLS(), expired.ClientTLS("localhost"), func(t *testing.T, err error) {
			var ie x509.CertificateInvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v (%T) is not an x509.CertificateInvalidError", err, err)
			}
			if ie.Reason != x509.Expired {
				t.Errorf("Reason = %v, want x509.Expired", ie.Reason)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := handshake(t, tt.server, tt.client)
			if err == nil {
				t.Fatal("handshake succeeded, want a verification error")
			}
			var ve *tls.CertificateVerificationError
			if !errors.As(err, &ve) {
				t.Errorf("error %v is not a *tls.CertificateVerificationError", err)
			}
			tt.check(t, err)
		})
	}
}

func TestOptionErrors(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		field string
	}{
		{"empty host", Options{Hosts: []string{"localhost", ""}}, "Hosts[1]"},
		{"space in host", Options{Hosts: []string{"bad host"}}, "Hosts[0]"},
		{"empty label", Options{Hosts: []string{"a..b"}}, "Hosts[0]"},
		{"a dot alone", Options{Hosts: []string{"."}}, "Hosts[0]"},
		{"wildcard alone", Options{Hosts: []string{"*"}}, "Hosts[0]"},
		{"wildcard inside", Options{Hosts: []string{"a.*.test"}}, "Hosts[0]"},
		{"bracketed IPv6", Options{Hosts: []string{"[::1]"}}, "Hosts[0]"},
		{"IP with zone", Options{Hosts: []string{"fe80::1%eth0"}}, "Hosts[0]"},
		{"CIDR", Options{Hosts: []string{"192.0.2.0/24"}}, "Hosts[0]"},
		{"label too long", Options{Hosts: []string{strings.Repeat("a", 64) + ".test"}}, "Hosts[0]"},
		{"name too long", Options{Hosts: []string{strings.Repeat("abcdefgh.", 30) + "test"}}, "Hosts[0]"},
		{"unknown key type", Options{KeyType: KeyType(42)}, "KeyType"},
		{"negative key type", Options{KeyType: -1}, "KeyType"},
		{"negative validity", Options{Validity: -time.Second}, "Validity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.opts)
			if err == nil {
				t.Fatalf("New succeeded (leaf %q), want an error", b.Leaf.DNSNames)
			}
			var oe *OptionError
			if !errors.As(err, &oe) {
				t.Fatalf("error %v is not an *OptionError", err)
			}
			if oe.Field != tt.field {
				t.Errorf("Field = %q, want %q", oe.Field, tt.field)
			}
			if !strings.Contains(err.Error(), "Options."+tt.field) {
				t.Errorf("message %q does not name Options.%s", err, tt.field)
			}
		})
	}
}

func TestKeyTypeText(t *testing.T) {
	tests := []struct {
		in   string
		want KeyType
	}{
		{"ecdsa", ECDSAP256}, {"ECDSA-P256", ECDSAP256}, {"p256", ECDSAP256},
		{"rsa", RSA2048}, {"rsa-2048", RSA2048}, {"RSA2048", RSA2048},
		{"ed25519", Ed25519},
	}
	for _, tt := range tests {
		var k KeyType
		if err := k.UnmarshalText([]byte(tt.in)); err != nil || k != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", tt.in, k, err, tt.want)
		}
	}
	for _, k := range allKeyTypes {
		text, err := k.MarshalText()
		if err != nil {
			t.Fatalf("MarshalText(%v): %v", k, err)
		}
		var back KeyType
		if err := back.UnmarshalText(text); err != nil || back != k {
			t.Errorf("round trip of %v via %q gave %v, %v", k, text, back, err)
		}
	}
	for _, bad := range []string{"", "dsa", "ecdsa-p384"} {
		k := Ed25519
		if err := k.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) accepted", bad)
		}
		if k != Ed25519 {
			t.Errorf("UnmarshalText(%q) changed the value to %v", bad, k)
		}
	}
	if _, err := KeyType(9).MarshalText(); err == nil {
		t.Error("MarshalText(KeyType(9)) succeeded")
	}
	if got := KeyType(9).String(); got != "KeyType(9)" {
		t.Errorf("String() = %q", got)
	}
}
