package stack

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/naquid/naquid/tools/certs/devcert"
)

// ServerName is the host name clients verify the server certificate against.
const ServerName = "localhost"

// Certs is the TLS material of a benchmark: the server's certificate (when this process serves)
// and the CA clients trust, plus the server's session ticket key, fixed so that a restarted
// server (the storm workload) accepts the tickets its predecessor issued.
type Certs struct {
	server    *tls.Certificate
	roots     *x509.CertPool
	ticketKey [32]byte
	bundle    *devcert.Bundle
}

// NewCerts makes a development CA and a leaf for localhost and 127.0.0.1 in memory.
func NewCerts() (*Certs, error) {
	b, err := devcert.New(devcert.Options{})
	if err != nil {
		return nil, fmt.Errorf("stack: certificates: %w", err)
	}
	cert := b.TLSCertificate()
	c := &Certs{server: &cert, roots: b.CertPool(), bundle: b}
	if _, err := rand.Read(c.ticketKey[:]); err != nil {
		return nil, fmt.Errorf("stack: session ticket key: %w", err)
	}
	return c, nil
}

// WriteFiles writes the CA and the leaf into dir (see devcert.Bundle.WriteFiles), for a client
// in another process (LoadCerts). It fails for Certs read with LoadCerts.
func (c *Certs) WriteFiles(dir string) error {
	if c.bundle == nil {
		return errors.New("stack: certificates loaded from files cannot be written again")
	}
	if _, err := c.bundle.WriteFiles(dir); err != nil {
		return fmt.Errorf("stack: write certificates: %w", err)
	}
	return nil
}

// LoadCerts reads what WriteFiles wrote: the CA (required) and, when present, the leaf and its
// key (a server needs them; a client does not).
func LoadCerts(dir string) (*Certs, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, devcert.CAFile))
	if err != nil {
		return nil, fmt.Errorf("stack: load certificates: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("stack: load certificates: no certificate in %s", filepath.Join(dir, devcert.CAFile))
	}
	c := &Certs{roots: roots}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, devcert.CertFile), filepath.Join(dir, devcert.KeyFile))
	switch {
	case err == nil:
		c.server = &cert
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("stack: load certificates: %w", err)
	}
	if _, err := rand.Read(c.ticketKey[:]); err != nil {
		return nil, fmt.Errorf("stack: session ticket key: %w", err)
	}
	return c, nil
}

// HasServer reports whether the Certs hold a server certificate and key.
func (c *Certs) HasServer() bool { return c.server != nil }

// ServerTLS returns a server configuration offering alpn (none when empty).
func (c *Certs) ServerTLS(alpn ...string) (*tls.Config, error) {
	if c.server == nil {
		return nil, errors.New("stack: no server certificate (the certificate files hold only the CA)")
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{*c.server},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   alpn,
	}
	conf.SetSessionTicketKeys([][32]byte{c.ticketKey})
	return conf, nil
}

// ClientTLS returns a client configuration that trusts the CA, verifies ServerName and offers
// alpn (none when empty).
func (c *Certs) ClientTLS(alpn ...string) *tls.Config {
	return &tls.Config{
		RootCAs:    c.roots,
		ServerName: ServerName,
		MinVersion: tls.VersionTLS13,
		NextProtos: alpn,
	}
}
