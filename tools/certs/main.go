// Command certs writes a development CA and a leaf certificate signed by it, for running naquid
// servers and clients locally.
//
// Usage:
//
//	go run ./tools/certs -out DIR [-host name,ip,...] [-key ecdsa|rsa|ed25519] [-days N]
//
// It writes DIR/ca.pem (trust it in clients), DIR/ca-key.pem, DIR/cert.pem (the leaf alone) and
// DIR/key.pem; keys get mode 0600. Existing files of those names are replaced. -host defaults to
// localhost,127.0.0.1,::1, -key to ecdsa (P-256) and -days to 30. Bad flags exit with status 2,
// other failures with status 1. The certificates come from package
// github.com/naquid/naquid/tools/certs/devcert, which tests use in process.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/naquid/naquid/tools/certs/devcert"
)

// usage is printed after a usage error and for -h.
const usage = `usage: certs -out DIR [-host name,ip,...] [-key ecdsa|rsa|ed25519] [-days N]

  -out DIR     directory to write ca.pem, ca-key.pem, cert.pem, key.pem into (created if missing)
  -host LIST   comma-separated DNS names and IP addresses the leaf is valid for
               (default localhost,127.0.0.1,::1)
  -key TYPE    key type of the CA and the leaf: ecdsa (P-256), rsa (2048-bit) or ed25519
               (default ecdsa)
  -days N      days the certificates stay valid, from one hour ago (default 30)
`

// usageError is a bad command line: main prints it with the usage text and exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func main() {
	err := run(os.Args[1:], os.Stdout)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "certs:", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprint(os.Stderr, "\n"+usage)
		os.Exit(2)
	}
	os.Exit(1)
}

// run parses args (without the program name), writes the files and reports them on stdout. A bad
// command line is a *usageError; -h prints the usage on stdout and returns nil.
func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	out := fs.String("out", "", "")
	hosts := fs.String("host", "", "")
	days := fs.Int("days", 30, "")
	var keyType devcert.KeyType
	fs.TextVar(&keyType, "key", devcert.ECDSAP256, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, werr := io.WriteString(stdout, usage)
			return werr
		}
		return &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("unexpected argument %q (flags only)", fs.Arg(0))}
	}
	if *out == "" {
		return &usageError{msg: "-out DIR is required"}
	}
	// Bound days so that the duration cannot overflow (time.Duration tops out near 292 years).
	const maxDays = 100 * 365
	if *days < 1 || *days > maxDays {
		return &usageError{msg: fmt.Sprintf("-days %d: want a whole number of days from 1 to %d", *days, maxDays)}
	}
	opts := devcert.Options{
		KeyType:  keyType,
		Validity: time.Duration(*days) * 24 * time.Hour,
	}
	if *hosts != "" {
		for _, h := range strings.Split(*hosts, ",") {
			opts.Hosts = append(opts.Hosts, strings.TrimSpace(h))
		}
	}
	bundle, err := devcert.New(opts)
	if err != nil {
		var oe *devcert.OptionError
		if errors.As(err, &oe) {
			return &usageError{msg: fmt.Sprintf("-host %q: %s", *hosts, oe.Reason)}
		}
		return err
	}
	paths, err := bundle.WriteFiles(*out)
	if err != nil {
		return err
	}
	var sans []string
	sans = append(sans, bundle.Leaf.DNSNames...)
	for _, ip := range bundle.Leaf.IPAddresses {
		sans = append(sans, ip.String())
	}
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "wrote %s\n", p)
	}
	fmt.Fprintf(&b, "%s leaf for %s, signed by %q, valid %s to %s\n",
		keyType, strings.Join(sans, ", "), bundle.CA.Subject.CommonName,
		bundle.Leaf.NotBefore.Format(time.RFC3339), bundle.Leaf.NotAfter.Format(time.RFC3339))
	b.WriteString("clients trust ca.pem; servers load cert.pem and key.pem\n")
	_, err = io.WriteString(stdout, b.String())
	return err
}
