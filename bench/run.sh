#!/usr/bin/env bash
# run.sh — the `make bench` recipe: nqbench's default suite, in under 5 minutes on 2 cores.
#
#   pipeline  nq (udp, mmsg) against raw quic-go, TCP, TLS, gRPC and kcp-go+smux
#   tick      1 000 and 10 000 clients x 10 Hz on nq (udp, mmsg) and raw quic-go (5 s measured;
#             10 000 is the goal load, 1 000 one these 2 cores sustain)
#   idle      10 000 idle connections on nq (udp), raw quic-go and TCP
#   storm     10 000 nq clients back after a server restart, with and then without resumption
#
# Results: results/latest.md (tables and ratio lines) and results/latest.jsonl; the run before
# is kept as results/previous.{md,jsonl}, and the change of every figure is printed. Extra
# arguments go to every nqbench invocation (for example -quiet, or -c 10 -n 2000 for a quick
# look). The exit status is nqbench's: non-zero when a run failed.
set -euo pipefail
cd "$(dirname "$0")"

mkdir -p results
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/nqbench" ./cmd/nqbench

if [ -f results/latest.jsonl ]; then
	cp results/latest.jsonl results/previous.jsonl
	[ -f results/latest.md ] && cp results/latest.md results/previous.md
fi

status=0
bench() { "$tmp/nqbench" "$@" || status=1; }

start=$SECONDS
bench -workloads pipeline -transports udp,mmsg -json "$tmp/pipeline.jsonl" "$@" >/dev/null
bench -workloads tick -transports udp,mmsg -tick-c 1000 -tick-warmup 2s -tick-duration 5s -json "$tmp/tick1k.jsonl" "$@" >/dev/null
bench -workloads tick -transports udp,mmsg -tick-warmup 2s -tick-duration 5s -json "$tmp/tick.jsonl" "$@" >/dev/null
bench -workloads idle,storm -transports udp -storm-recovery 15s -json "$tmp/idle-storm.jsonl" "$@" >/dev/null

from=""
for f in "$tmp"/pipeline.jsonl "$tmp"/tick1k.jsonl "$tmp"/tick.jsonl "$tmp"/idle-storm.jsonl; do
	[ -f "$f" ] && from="$from${from:+,}$f"
done
if [ -z "$from" ]; then
	echo "run.sh: no results" >&2
	exit 1
fi
"$tmp/nqbench" -from "$from" -json results/latest.jsonl -md results/latest.md \
	-compare results/previous.jsonl | grep -v '^{' || status=1
echo "run.sh: suite took $((SECONDS - start)) s; results in bench/results/latest.md" >&2
exit $status
