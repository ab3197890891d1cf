package devcert_test

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/naquid/naquid/tools/certs/devcert"
)

// A server and a client that trust each other through a fresh development CA, with full
// certificate and host name verification.
func ExampleNew() {
	bundle, err := devcert.New(devcert.Options{Hosts: []string{"game.example.test", "192.0.2.1"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("DNS names:", bundle.Leaf.DNSNames)
	fmt.Println("IP addresses:", bundle.Leaf.IPAddresses)

	serverConn, clientConn := net.Pipe()
	defer serverConn.Close()
	defer clientConn.Close()
	server := tls.Server(serverConn, bundle.ServerTLS())
	go server.Handshake()

	client := tls.Client(clientConn, bundle.ClientTLS("game.example.test"))
	if err := client.Handshake(); err != nil {
		fmt.Println("handshake:", err)
		return
	}
	chain := client.ConnectionState().VerifiedChains[0]
	fmt.Printf("verified: %s <- %s\n", chain[0].Subject.CommonName, chain[1].Subject.CommonName)
	// Output:
	// DNS names: [game.example.test]
	// IP addresses: [192.0.2.1]
	// verified: game.example.test <- naquid development CA
}
