#!/usr/bin/env bash
# run.sh — the `make bench` and `make bench-xdp` recipes.
#
# ./run.sh [nqbench flags]: nqbench's default suite, in under 5 minutes on 2 cores:
#
#   pipeline  nq (udp, mmsg) against raw quic-go, TCP, TLS and kcp-go+smux: 5 rounds, the order
#             reversed every other round, each stack's median run reported (one run's ratio
#             moves by a tenth with the order alone); gRPC once (a run takes 14 s)
#   tick      1 000 and 10 000 clients x 10 Hz on nq (udp, mmsg) and raw quic-go (5 s measured;
#             10 000 is the goal load, 1 000 one these 2 cores sustain)
#   idle      10 000 idle connections on nq (udp), raw quic-go and TCP
#   storm     10 000 nq clients back after a server restart, with and then without resumption
#
# Results: results/latest.md (tables and ratio lines) and results/latest.jsonl; the run before
# is kept as results/previous.{md,jsonl}, and the change of every figure is printed.
#
# ./run.sh xdp [nqbench flags]: the same pipeline and tick runs with nq on afxdp as well (about
# 3.5 minutes; kept out of the default suite, which it would push past 5 minutes). The afxdp
# server runs on AF_XDP on a veth pair between two network namespaces nqbench creates and
# deletes, its clients on kernel UDP in the other namespace, while the other stacks run on
# loopback. Needs root and a kernel with AF_XDP. Results: results/xdp.{md,jsonl}, the run before
# as results/xdp-previous.{md,jsonl}.
#
# Extra arguments go to every nqbench invocation (for example -quiet, or -c 10 -n 2000 for a
# quick look). The exit status is nqbench's: non-zero when a run failed.
set -euo pipefail
cd "$(dirname "$0")"

suite=default
if [ "${1:-}" = xdp ]; then
	suite=xdp
	shift
fi
case $suite in
default) out=results/latest prev=results/previous transports=udp,mmsg ;;
xdp) out=results/xdp prev=results/xdp-previous transports=udp,mmsg,afxdp ;;
esac

mkdir -p results
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/nqbench" ./cmd/nqbench

if [ "$suite" = xdp ]; then
	# Fail at once, with nqbench's reason, where afxdp cannot run.
	"$tmp/nqbench" -isolate=false -quiet -stacks nq -transports afxdp -c 1 -n 1 -warmup -1 >/dev/null
fi

if [ -f "$out.jsonl" ]; then
	cp "$out.jsonl" "$prev.jsonl"
	[ -f "$out.md" ] && cp "$out.md" "$prev.md"
fi

status=0
bench() { "$tmp/nqbench" "$@" || status=1; }

start=$SECONDS
bench -workloads pipeline -transports "$transports" -stacks nq,quic,tcp,tls,kcp -rounds 5 -json "$tmp/pipeline.jsonl" "$@" >/dev/null
bench -workloads pipeline -stacks grpc -json "$tmp/pipeline-grpc.jsonl" "$@" >/dev/null
bench -workloads tick -transports "$transports" -tick-c 1000 -tick-warmup 2s -tick-duration 5s -json "$tmp/tick1k.jsonl" "$@" >/dev/null
bench -workloads tick -transports "$transports" -tick-warmup 2s -tick-duration 5s -json "$tmp/tick.jsonl" "$@" >/dev/null
if [ "$suite" = default ]; then
	bench -workloads idle,storm -transports udp -storm-recovery 30s -json "$tmp/idle-storm.jsonl" "$@" >/dev/null
fi

from=""
for f in "$tmp"/pipeline.jsonl "$tmp"/pipeline-grpc.jsonl "$tmp"/tick1k.jsonl "$tmp"/tick.jsonl "$tmp"/idle-storm.jsonl; do
	[ -f "$f" ] && from="$from${from:+,}$f"
done
if [ -z "$from" ]; then
	echo "run.sh: no results" >&2
	exit 1
fi
"$tmp/nqbench" -from "$from" -json "$out.jsonl" -md "$out.md" \
	-compare "$prev.jsonl" | grep -v '^{' || status=1
echo "run.sh: suite took $((SECONDS - start)) s; results in bench/$out.md" >&2
exit $status
