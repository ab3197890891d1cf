//go:build !linux

package main

import (
	"errors"
	"io"
)

// errUnsupported: the benchmark needs Linux (network namespaces, veth, XDP, AF_XDP).
var errUnsupported = errors.New("pps: needs Linux (network namespaces, veth, XDP and AF_XDP)")

func runBench(options, io.Writer, io.Writer) error { return errUnsupported }

func runChild(childConfig) error { return errUnsupported }
