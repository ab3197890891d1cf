package devcert

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFiles(t *testing.T) {
	b := bundleFor(t, ECDSAP256)
	dir := filepath.Join(t.TempDir(), "nested", "certs") // created by WriteFiles

	// A stale, world-readable key file must be replaced by a 0600 one.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}

	paths, err := b.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name string
		mode fs.FileMode
		data []byte
	}{
		{CAFile, 0o644, b.CAPEM},
		{CAKeyFile, 0o600, b.CAKeyPEM},
		{CertFile, 0o644, b.LeafPEM},
		{KeyFile, 0o600, b.LeafKeyPEM},
	}
	if len(paths) != len(want) {
		t.Fatalf("WriteFiles returned %d paths, want %d", len(paths), len(want))
	}
	for i, w := range want {
		path := filepath.Join(dir, w.name)
		if paths[i] != path {
			t.Errorf("paths[%d] = %q, want %q", i, paths[i], path)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode(); got != w.mode {
			t.Errorf("%s: mode %v, want %v", w.name, got, w.mode)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, w.data) {
			t.Errorf("%s: contents differ from the bundle", w.name)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Errorf("directory holds %d entries, want %d (temporary files left behind?)", len(entries), len(want))
	}

	// The files parse back: the leaf pair loads, the CA pair matches, the chain verifies.
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatalf("LoadX509KeyPair(cert, key): %v", err)
	}
	if len(pair.Certificate) != 1 {
		t.Errorf("cert.pem holds %d certificates, want the leaf alone", len(pair.Certificate))
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatalf("LoadX509KeyPair(ca, ca-key): %v", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("leaf from files does not verify against ca.pem: %v", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(keyPEM); block == nil || block.Type != "PRIVATE KEY" {
		t.Errorf("key.pem is not a PKCS #8 PEM block")
	}
}

func TestWriteFilesErrors(t *testing.T) {
	b := bundleFor(t, ECDSAP256)
	// dir is a regular file: the directory cannot be created.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteFiles(file); err == nil {
		t.Error("WriteFiles into a regular file succeeded")
	}

	empty := &Bundle{}
	if paths, err := empty.WriteFiles(t.TempDir()); err == nil || len(paths) != 0 {
		t.Errorf("WriteFiles of an empty bundle = %v, %v; want an error and no files", paths, err)
	}
}
