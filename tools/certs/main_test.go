package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runMainEnv makes the test binary act as the command: TestExitCodes runs it as a child process to
// observe main's exit status and stderr.
const runMainEnv = "NAQUID_CERTS_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		os.Args = append([]string{"certs"}, strings.Fields(os.Getenv(runMainEnv+"_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestRunWritesFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	var stdout bytes.Buffer
	err := run([]string{"-out", dir, "-host", "game.example.test, 192.0.2.1,2001:db8::1", "-key", "ed25519", "-days", "7"}, &stdout)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, name := range []string{"ca.pem", "ca-key.pem", "cert.pem", "key.pem"} {
		if !strings.Contains(stdout.String(), "wrote "+filepath.Join(dir, name)+"\n") {
			t.Errorf("output does not report %s:\n%s", name, stdout.String())
		}
	}
	for name, mode := range map[string]os.FileMode{"ca-key.pem": 0o600, "key.pem": 0o600, "ca.pem": 0o644, "cert.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), mode)
		}
	}

	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pair.PrivateKey.(ed25519.PrivateKey); !ok {
		t.Errorf("key.pem holds %T, want an Ed25519 key", pair.PrivateKey)
	}
	leaf := pair.Leaf
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got != 7*24*time.Hour {
		t.Errorf("validity %v, want 7 days", got)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	for _, host := range []string{"game.example.test", "192.0.2.1", "2001:db8::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("Verify(%q): %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"}); err == nil {
		t.Error("leaf verifies for localhost, which -host did not name")
	}
}

func TestRunDefaults(t *testing.T) {
	dir := t.TempDir()
	var stdout bytes.Buffer
	if err := run([]string{"-out", dir}, &stdout); err != nil {
		t.Fatalf("run: %v", err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if got := pair.Leaf.NotAfter.Sub(pair.Leaf.NotBefore); got != 30*24*time.Hour {
		t.Errorf("validity %v, want 30 days", got)
	}
	if !strings.Contains(stdout.String(), "ecdsa leaf for localhost, 127.0.0.1, ::1") {
		t.Errorf("output does not describe the default leaf:\n%s", stdout.String())
	}
}

func TestRunUsageErrors(t *testing.T) {
	out := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string // in the message
	}{
		{"missing -out", []string{"-host", "localhost"}, "-out DIR is required"},
		{"unknown key", []string{"-out", out, "-key", "dsa"}, `unknown key type "dsa"`},
		{"zero days", []string{"-out", out, "-days", "0"}, "-days 0"},
		{"negative days", []string{"-out", out, "-days", "-3"}, "-days -3"},
		{"too many days", []string{"-out", out, "-days", "99999999"}, "-days 99999999"},
		{"days not a number", []string{"-out", out, "-days", "ten"}, "-days"},
		{"empty host entry", []string{"-out", out, "-host", "localhost,,192.0.2.1"}, "empty host"},
		{"bad host", []string{"-out", out, "-host", "bad/host"}, "not allowed"},
		{"unknown flag", []string{"-out", out, "-verbose"}, "-verbose"},
		{"positional argument", []string{"-out", out, "extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout bytes.Buffer
			err := run(tt.args, &stdout)
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("run(%q) = %v, want a usage error", tt.args, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("message %q does not contain %q", err, tt.want)
			}
		})
	}
	if entries, err := os.ReadDir(out); err != nil || len(entries) != 0 {
		t.Errorf("usage errors wrote files: %v, %v", entries, err)
	}
}

func TestRunHelp(t *testing.T) {
	var stdout bytes.Buffer
	if err := run([]string{"-h"}, &stdout); err != nil {
		t.Fatalf("run(-h): %v", err)
	}
	if !strings.HasPrefix(stdout.String(), "usage: certs -out DIR") {
		t.Errorf("help output:\n%s", stdout.String())
	}
}

func TestRunWriteFailure(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"-out", file}, &bytes.Buffer{})
	var ue *usageError
	if err == nil || errors.As(err, &ue) {
		t.Fatalf("run into a regular file = %v, want a non-usage error", err)
	}
}

// TestExitCodes runs main in a child process: status 0 on success, 2 with the message and the
// usage on stderr for a bad flag, 1 for a failure that is not the command line's fault.
func TestExitCodes(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       string
		code       int
		stderrHas  string
		stdoutHas  string
		wantOutput bool
	}{
		{"ok", "-out " + t.TempDir(), 0, "", "wrote ", true},
		{"bad key", "-out " + t.TempDir() + " -key dsa", 2, `certs: invalid value "dsa" for flag -key`, "", false},
		{"missing out", "-days 3", 2, "certs: -out DIR is required", "", false},
		{"write failure", "-out " + file, 1, "certs: devcert: create directory", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			t.Cleanup(cancel)
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), runMainEnv+"=1", runMainEnv+"_ARGS="+tt.args)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("running the command: %v", err)
			}
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.stderrHas) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.stderrHas)
			}
			if tt.code == 2 && !strings.Contains(stderr.String(), "usage: certs") {
				t.Errorf("stderr does not show the usage:\n%s", stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.stdoutHas) || (stdout.Len() > 0) != tt.wantOutput {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tt.stdoutHas)
			}
		})
	}
}
