# naquid — two commands do all set-up on a fresh machine: `make demo` and `make test`.
GO        ?= go
PKGS      ?= ./...
STATICCHECK := .bin/staticcheck
# The race detector multiplies CPU time; on 2 cores keep the package parallelism modest.
TESTFLAGS ?= -race -count=1 -timeout 8m

.PHONY: all setup demo test lint fmt-check vet staticcheck unit fuzz-short fuzz soak xdp-test bench bench-xdp bench-check bench-pps profile clean

all: test

setup:
	@bash scripts/setup.sh

## demo: server and clients in one process, certificates in memory; prints req/s and latency.
demo:
	$(GO) run ./cmd/nq-demo $(DEMOFLAGS)

## test: formatting, vet, staticcheck and every test under the race detector. As root this
## includes the tests that need network namespaces, BPF and AF_XDP.
test: setup lint unit bench-check fuzz-short

lint: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck: setup
	$(STATICCHECK) $(PKGS)

# The acceptance suite (naquid's e2e scenarios) runs a second time over the mmsg backend.
ACCEPTANCE := TestRPC|TestTimeout|TestReconnectClient|TestReconnectServer|TestShutdown|TestChaos|TestRoom|TestHostilePeer|TestStreams|TestDatagrams|TestMigration

# The allocation guards run a second time without -race, which defeats sync.Pool (under -race
# they skip the pooled paths).
ALLOCS := TestNoAllocs|TestNoAllocations|TestNoAllocsPerPacket|TestAllocs|TestAdapterNoAllocs|TestHotPathsDoNotAllocate
ALLOC_PKGS := ./internal/batch/ ./internal/wire/ ./quic/ ./transport/memconn/ ./transport/udp/ ./transport/mmsg/ ./transport/afxdp/

unit:
	$(GO) test $(TESTFLAGS) $(PKGS)
	$(GO) test $(TESTFLAGS) -run '$(ACCEPTANCE)' ./nq/ -args -nq.transport=mmsg
	$(GO) test -count=1 -timeout 3m -run '^($(ALLOCS))$$' $(ALLOC_PKGS)

## fuzz-short: every fuzz target for 10 seconds (part of make test); fuzz: 10 minutes each.
fuzz-short:
	bash scripts/fuzz.sh 10s
fuzz:
	bash scripts/fuzz.sh 10m

## soak: the reliability suite at full size (fault matrix, 10 000 reconnect cycles, large floods),
## without the race detector; about 10 minutes.
soak:
	$(GO) test -count=1 -timeout 60m -run Reliability ./nq/ -args -nq.soak

## bench: the default nqbench suite (under 5 minutes): nq against raw quic-go, TCP, TLS, gRPC and
## kcp-go+smux; writes bench/results/latest.md and prints the change from the last run.
bench:
	cd bench && ./run.sh $(BENCHFLAGS)

## bench-xdp: make bench's pipeline and tick runs with nq on afxdp as well (its server on AF_XDP on a
## veth pair between two namespaces nqbench creates, the peers on loopback); needs root; about
## 3.5 minutes; writes bench/results/xdp.md.
bench-xdp:
	cd bench && ./run.sh xdp $(BENCHFLAGS)

## bench-pps: datagram rates per transport (udp, mmsg, afxdp, and asavie/xdp as the peer, plus a bare
## recvmmsg socket as the floor of kernel receivers) over a veth pair between two namespaces it
## creates, cores pinned, the kernel receivers both on veth's default path and with GRO on (NAPI, as
## on a NIC); needs root and ethtool; about 6.5 minutes.
bench-pps: setup
	cd bench/pps && $(GO) run . $(PPSFLAGS)

## bench-check: the bench modules (their own go.mod, so ./... above skips them) are linted and
## tested.
bench-check: setup
	cd bench && gofmt -l . | (! grep .) && $(GO) vet ./... && ../$(STATICCHECK) ./... && $(GO) test -race -count=1 ./...
	cd bench/pps && $(GO) vet ./... && ../../$(STATICCHECK) ./... && $(GO) test -race -count=1 ./...

## profile: CPU, heap, mutex and block profiles of a bench workload, with flame graphs.
profile:
	bash scripts/profile.sh $(PROFILEFLAGS)

## xdp-test: everything that needs root, network namespaces, BPF or AF_XDP (make test runs these
## too when run as root). The allocation guard runs without -race, which defeats sync.Pool.
xdp-test: setup
	$(GO) test -race -count=1 -timeout 5m ./bpf/... ./internal/netns/... ./transport/afxdp/... ./transport/mmsg/...
	$(GO) test -count=1 -run '^($(ALLOCS))$$' ./transport/afxdp/ ./transport/mmsg/

clean:
	rm -rf .bin
