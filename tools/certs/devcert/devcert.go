// Package devcert makes a development certificate authority and a leaf certificate signed by it,
// in process, for tests, demos and local servers.
//
// QUIC always runs TLS 1.3, and naquid never disables certificate verification: a client trusts the
// development CA ([Bundle.ClientTLS]) and checks the server's host name against the leaf's subject
// alternative names, exactly as it would in production. The same bundle can be written to disk
// ([Bundle.WriteFiles]) for servers started from files; `go run ./tools/certs` does that from the
// command line.
//
// The CA has a path length of zero, so it can sign leaves but no intermediate CAs. Its private key
// is as sensitive as any CA key: a machine that trusts ca.pem trusts every certificate that key
// signs. Keep it to development machines.
package devcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Defaults used when the corresponding [Options] field is zero.
const (
	// DefaultValidity is how long the CA and the leaf stay valid after NotBefore.
	DefaultValidity = 30 * 24 * time.Hour
	// DefaultBackdate is how far before "now" the certificates start to be valid, so that a peer
	// whose clock is slightly behind still accepts them.
	DefaultBackdate = time.Hour
	// DefaultCACommonName is the subject common name of the CA.
	DefaultCACommonName = "naquid development CA"
)

// DefaultHosts returns the host names and addresses a leaf is valid for when Options.Hosts is empty:
// localhost, 127.0.0.1 and ::1.
func DefaultHosts() []string { return []string{"localhost", "127.0.0.1", "::1"} }

// KeyType is the kind of key pair generated for both the CA and the leaf. Its zero value is
// [ECDSAP256]. It implements encoding.TextMarshaler and encoding.TextUnmarshaler, so it can be used
// with flag.TextVar.
type KeyType int

// Key types.
const (
	// ECDSAP256 is ECDSA on the NIST P-256 curve: small certificates, fast handshakes. The default.
	ECDSAP256 KeyType = iota
	// RSA2048 is a 2048-bit RSA key, for peers that accept nothing else. Generating one takes a
	// noticeable fraction of a second.
	RSA2048
	// Ed25519 is an Ed25519 key.
	Ed25519
)

// String returns the name of the key type: "ecdsa", "rsa" or "ed25519".
func (k KeyType) String() string {
	switch k {
	case ECDSAP256:
		return "ecdsa"
	case RSA2048:
		return "rsa"
	case Ed25519:
		return "ed25519"
	default:
		return "KeyType(" + strconv.Itoa(int(k)) + ")"
	}
}

// MarshalText returns the name of the key type, or an error for an unknown value.
func (k KeyType) MarshalText() ([]byte, error) {
	switch k {
	case ECDSAP256, RSA2048, Ed25519:
		return []byte(k.String()), nil
	default:
		return nil, fmt.Errorf("devcert: unknown key type %d", int(k))
	}
}

// UnmarshalText sets k from a name as returned by String. "ecdsa-p256", "p256", "rsa-2048" and
// "rsa2048" are accepted too; case does not matter.
func (k *KeyType) UnmarshalText(text []byte) error {
	switch strings.ToLower(string(text)) {
	case "ecdsa", "ecdsa-p256", "p256":
		*k = ECDSAP256
	case "rsa", "rsa-2048", "rsa2048":
		*k = RSA2048
	case "ed25519":
		*k = Ed25519
	default:
		return fmt.Errorf("devcert: unknown key type %q (want ecdsa, rsa or ed25519)", text)
	}
	return nil
}

// Options describe the certificates [New] makes. The zero value makes an ECDSA P-256 CA and leaf
// for localhost, 127.0.0.1 and ::1, valid from one hour ago for 30 days.
type Options struct {
	// Hosts are the names the leaf is valid for. Each entry is a DNS name (a leading "*." label
	// makes a wildcard; a trailing dot is dropped) or an IP literal without brackets or zone; DNS
	// names become DNS SANs, IP literals IP SANs. Duplicates are ignored. Default: [DefaultHosts].
	Hosts []string
	// KeyType is the key pair type of both certificates. Default: ECDSAP256 (the zero value).
	KeyType KeyType
	// Validity is how long both certificates are valid after NotBefore. Negative is an error.
	// Default: DefaultValidity (30 days).
	Validity time.Duration
	// NotBefore is when both certificates become valid. A time in the past together with a short
	// Validity makes certificates that are already expired, for tests. Default: now minus
	// DefaultBackdate (one hour).
	NotBefore time.Time
	// CommonName is the subject common name of the leaf. Clients match host names against the
	// SANs only; the common name is for people reading the certificate. Default: the first host.
	CommonName string
	// CACommonName is the subject common name of the CA. Default: DefaultCACommonName.
	CACommonName string
}

// OptionError reports an invalid [Options] field. [New] returns it (errors.As finds it).
type OptionError struct {
	// Field names the bad field, with an index for a slice element: "Hosts[1]", "KeyType".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error returns "devcert: invalid Options.<Field>: <Reason>".
func (e *OptionError) Error() string {
	return "devcert: invalid Options." + e.Field + ": " + e.Reason
}

// hostSANs is Options.Hosts split into SAN kinds.
type hostSANs struct {
	dns []string
	ips []net.IP
}

// validate checks o and returns the hosts split into SANs.
func (o *Options) validate() (hostSANs, error) {
	var sans hostSANs
	switch o.KeyType {
	case ECDSAP256, RSA2048, Ed25519:
	default:
		return sans, &OptionError{Field: "KeyType", Reason: fmt.Sprintf("unknown key type %d", int(o.KeyType))}
	}
	if o.Validity < 0 {
		return sans, &OptionError{Field: "Validity", Reason: fmt.Sprintf("negative duration %v", o.Validity)}
	}
	hosts := o.Hosts
	if len(hosts) == 0 {
		hosts = DefaultHosts()
	}
	seen := make(map[string]bool, len(hosts))
	for i, h := range hosts {
		field := fmt.Sprintf("Hosts[%d]", i)
		if h == "" {
			return sans, &OptionError{Field: field, Reason: "empty host"}
		}
		if addr, err := netip.ParseAddr(h); err == nil {
			if addr.Zone() != "" {
				return sans, &OptionError{Field: field, Reason: fmt.Sprintf("IP address %q has a zone, which a certificate cannot name", h)}
			}
			addr = addr.Unmap() // ::ffff:192.0.2.1 is 192.0.2.1 in a certificate
			key := addr.String()
			if !seen[key] {
				seen[key] = true
				sans.ips = append(sans.ips, net.IP(addr.AsSlice()))
			}
			continue
		}
		if strings.HasSuffix(h, ".") && len(h) > 1 {
			h = h[:len(h)-1] // a fully qualified name: certificates name it without the root dot
		}
		if reason := checkDNSName(h); reason != "" {
			return sans, &OptionError{Field: field, Reason: fmt.Sprintf("%q: %s", hosts[i], reason)}
		}
		key := strings.ToLower(h)
		if !seen[key] {
			seen[key] = true
			sans.dns = append(sans.dns, h)
		}
	}
	return sans, nil
}

// checkDNSName returns why name is not a usable DNS SAN, or "" if it is.
func checkDNSName(name string) string {
	if strings.HasPrefix(name, "[") {
		return "write IP addresses without brackets"
	}
	if len(name) > 253 {
		return "longer than 253 characters"
	}
	labels := strings.Split(name, ".")
	for i, label := range labels {
		switch {
		case label == "":
			return "empty label"
		case label == "*" && i == 0 && len(labels) > 1:
			continue
		case len(label) > 63:
			return "label longer than 63 characters"
		}
		for _, c := range label {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return fmt.Sprintf("character %q not allowed in a host name", c)
			}
		}
	}
	return ""
}

// Bundle is a development CA and a leaf certificate it signed, parsed and PEM-encoded. Private keys
// are PKCS #8. The fields are read by the methods; change them only if you know why.
type Bundle struct {
	// CA is the self-signed certificate authority.
	CA *x509.Certificate
	// CAKey is the CA's private key.
	CAKey crypto.Signer
	// Leaf is the server (and client) certificate signed by CA.
	Leaf *x509.Certificate
	// LeafKey is the leaf's private key.
	LeafKey crypto.Signer

	// CAPEM is CA as a PEM "CERTIFICATE" block.
	CAPEM []byte
	// CAKeyPEM is CAKey as a PEM "PRIVATE KEY" block.
	CAKeyPEM []byte
	// LeafPEM is Leaf as a PEM "CERTIFICATE" block, without the CA (see WriteFiles).
	LeafPEM []byte
	// LeafKeyPEM is LeafKey as a PEM "PRIVATE KEY" block.
	LeafKeyPEM []byte
}

// New generates a CA and a leaf as described by opts. An invalid field is reported as an
// *[OptionError].
func New(opts Options) (*Bundle, error) {
	sans, err := opts.validate()
	if err != nil {
		return nil, err
	}
	validity := opts.Validity
	if validity == 0 {
		validity = DefaultValidity
	}
	notBefore := opts.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-DefaultBackdate)
	}
	notBefore = notBefore.UTC().Truncate(time.Second)
	notAfter := notBefore.Add(validity)

	caName := opts.CACommonName
	if caName == "" {
		caName = DefaultCACommonName
	}
	leafName := opts.CommonName
	if leafName == "" {
		if len(sans.dns) > 0 {
			leafName = sans.dns[0]
		} else {
			leafName = sans.ips[0].String()
		}
	}

	caKey, err := generateKey(opts.KeyType)
	if err != nil {
		return nil, fmt.Errorf("devcert: generate %s CA key: %w", opts.KeyType, err)
	}
	caSKI, err := subjectKeyID(caKey.Public())
	if err != nil {
		return nil, fmt.Errorf("devcert: CA subject key id: %w", err)
	}
	caTemplate := &x509.Certificate{
		Subject:               pkix.Name{CommonName: caName, Organization: []string{"naquid development"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          caSKI,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("devcert: create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("devcert: parse CA certificate: %w", err)
	}

	leafKey, err := generateKey(opts.KeyType)
	if err != nil {
		return nil, fmt.Errorf("devcert: generate %s leaf key: %w", opts.KeyType, err)
	}
	leafSKI, err := subjectKeyID(leafKey.Public())
	if err != nil {
		return nil, fmt.Errorf("devcert: leaf subject key id: %w", err)
	}
	usage := x509.KeyUsageDigitalSignature
	if opts.KeyType == RSA2048 {
		// TLS 1.2 RSA key exchange encrypts with the key; harmless for TLS 1.3.
		usage |= x509.KeyUsageKeyEncipherment
	}
	leafTemplate := &x509.Certificate{
		Subject:               pkix.Name{CommonName: leafName, Organization: []string{"naquid development"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              sans.dns,
		IPAddresses:           sans.ips,
		SubjectKeyId:          leafSKI,
		AuthorityKeyId:        ca.SubjectKeyId,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTemplate, ca, leafKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("devcert: create leaf certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, fmt.Errorf("devcert: parse leaf certificate: %w", err)
	}

	caKeyPEM, err := keyPEM(caKey)
	if err != nil {
		return nil, fmt.Errorf("devcert: encode CA key: %w", err)
	}
	leafKeyPEM, err := keyPEM(leafKey)
	if err != nil {
		return nil, fmt.Errorf("devcert: encode leaf key: %w", err)
	}
	return &Bundle{
		CA:         ca,
		CAKey:      caKey,
		Leaf:       leaf,
		LeafKey:    leafKey,
		CAPEM:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		CAKeyPEM:   caKeyPEM,
		LeafPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		LeafKeyPEM: leafKeyPEM,
	}, nil
}

// generateKey makes a key pair of type k.
func generateKey(k KeyType) (crypto.Signer, error) {
	switch k {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case Ed25519:
		_, key, err := ed25519.GenerateKey(rand.Reader)
		return key, err
	default:
		return nil, fmt.Errorf("unknown key type %d", int(k))
	}
}

// subjectKeyID derives a key identifier from pub as RFC 7093 section 2 method 1 does: the leftmost
// 160 bits of the SHA-256 hash of the subjectPublicKey bit string.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

// keyPEM encodes key as a PEM "PRIVATE KEY" (PKCS #8) block.
func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// CertPool returns a new pool holding only the CA certificate.
func (b *Bundle) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(b.CA)
	return pool
}

// TLSCertificate returns the leaf and its key as a tls.Certificate. The chain holds the leaf only:
// the peer has the CA already, and sending it would only enlarge the server's first flight, which
// QUIC's anti-amplification limit caps at three times what the client sent.
func (b *Bundle) TLSCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{b.Leaf.Raw},
		PrivateKey:  b.LeafKey,
		Leaf:        b.Leaf,
	}
}

// ServerTLS returns a new server configuration presenting the leaf, with TLS 1.3 as the minimum
// version. Set NextProtos (the ALPN names) before use: QUIC requires them. To require client
// certificates, set ClientAuth to tls.RequireAndVerifyClientCert and ClientCAs to b.CertPool(); the
// leaf is valid for client authentication too.
func (b *Bundle) ServerTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{b.TLSCertificate()},
		MinVersion:   tls.VersionTLS13,
	}
}

// ClientTLS returns a new client configuration that trusts only the CA and verifies the server's
// chain and its host name against serverName, with TLS 1.3 as the minimum version. An empty
// serverName leaves ServerName unset, for dialers that fill it from the address they dial
// (tls.Dial, quic-go's DialAddr). Certificate verification is never disabled. Set NextProtos
// before use with QUIC.
func (b *Bundle) ClientTLS(serverName string) *tls.Config {
	return &tls.Config{
		RootCAs:    b.CertPool(),
		ServerName: serverName,
		MinVersion: tls.VersionTLS13,
	}
}
