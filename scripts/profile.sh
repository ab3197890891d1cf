#!/usr/bin/env bash
# profile.sh — run an nqbench workload under the profilers and write what costs the time.
#
# Usage: scripts/profile.sh [-o DIR] [nqbench flags...]
#   Default workload: the pipeline on nq over UDP (-workloads pipeline -stacks nq -transports udp).
#   Any nqbench flags replace that default, e.g.
#     scripts/profile.sh -workloads tick -stacks nq -tick-c 2000
#     scripts/profile.sh -stacks nq,quic -c 100 -n 5000
#
# Writes into DIR (default bench/results/profile-<UTC time>):
#   results.md / results.jsonl          what the profiled runs measured
#   pprof/<run>.{cpu,heap,mutex,block}.pprof   Go profiles of each run (nqbench -profile-dir)
#   <run>.<kind>.top.txt                top 40 functions (flat and cumulative)
#   <run>.<kind>.flame.svg              flame graph (bench/cmd/flamegraph)
#   <run>.<kind>.callgraph.svg          pprof call graph (needs graphviz)
#   perf-stat.txt                       perf stat of a whole run, when the kernel allows
#   perf.flame.svg, perf.top.txt        perf record (cpu-clock, call graphs) of a whole run
# Installs graphviz and linux-perf with apt-get when missing (as root); without them the
# call graphs or the perf part are skipped with a message. Profiling slows the runs down: its
# figures are for finding costs, not for comparing stacks (use make bench for that).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

out=""
if [ "${1:-}" = "-o" ]; then
	out=$2
	shift 2
fi
[ -n "$out" ] || out="$root/bench/results/profile-$(date -u +%Y%m%d-%H%M%S)"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-workloads pipeline -stacks nq -transports udp)

install() { # install the Debian packages named, when root and apt-get can
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "profile.sh: installing $*" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
			{ DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; } ||
			echo "profile.sh: could not install $*" >&2
	fi
}
command -v dot >/dev/null 2>&1 || install graphviz
command -v perf >/dev/null 2>&1 || install linux-perf

mkdir -p "$out/pprof"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
(cd "$root/bench" && go build -o "$bin/nqbench" ./cmd/nqbench && go build -o "$bin/flamegraph" ./cmd/flamegraph)

echo "profile.sh: pprof run: nqbench ${args[*]}" >&2
"$bin/nqbench" "${args[@]}" -profile-dir "$out/pprof" -json "$out/results.jsonl" -md "$out/results.md" >/dev/null ||
	echo "profile.sh: a run failed (see above); profiling what there is" >&2

for prof in "$out"/pprof/*.pprof; do
	[ -e "$prof" ] || continue
	name=$(basename "$prof" .pprof) # <run>.<kind>
	kind=${name##*.}
	index=()
	# The heap profile is written after the run closed its connections: what it allocated is the
	# useful view (its live objects are gone by then).
	[ "$kind" = heap ] && index=(-sample_index=alloc_space)
	go tool pprof "${index[@]}" -top -nodecount=40 "$prof" >"$out/$name.top.txt" 2>/dev/null || true
	if go tool pprof "${index[@]}" -traces "$prof" 2>/dev/null |
		"$bin/flamegraph" -in traces -title "$name" >"$out/$name.flame.svg" 2>/dev/null; then :; else
		rm -f "$out/$name.flame.svg" # an empty profile (no contention, say) has no graph
	fi
	if command -v dot >/dev/null 2>&1; then
		go tool pprof "${index[@]}" -svg -nodecount=80 "$prof" >"$out/$name.callgraph.svg" 2>/dev/null || rm -f "$out/$name.callgraph.svg"
	fi
done
command -v dot >/dev/null 2>&1 || echo "profile.sh: no graphviz: call graphs skipped" >&2

# perf: software events work in VMs without hardware counters; skip when perf is refused.
if command -v perf >/dev/null 2>&1 && perf stat -e task-clock true >/dev/null 2>&1; then
	events=task-clock,context-switches,cpu-migrations,page-faults
	if perf stat -e cycles,instructions true 2>&1 | grep -q "<not supported>"; then :; else
		events=$events,cycles,instructions
	fi
	echo "profile.sh: perf stat run" >&2
	perf stat -e "$events" -o "$out/perf-stat.txt" -- "$bin/nqbench" "${args[@]}" -quiet >/dev/null 2>&1 ||
		echo "profile.sh: perf stat run failed" >&2
	echo "profile.sh: perf record run" >&2
	if perf record -e cpu-clock -F 499 -g -o "$out/perf.data" -- "$bin/nqbench" "${args[@]}" -quiet >/dev/null 2>"$out/perf-record.log"; then
		perf script -i "$out/perf.data" 2>/dev/null | "$bin/flamegraph" -in perf -title "perf cpu-clock: nqbench ${args[*]}" >"$out/perf.flame.svg" ||
			rm -f "$out/perf.flame.svg"
		perf report -i "$out/perf.data" --stdio --no-children --sort symbol 2>/dev/null | head -80 >"$out/perf.top.txt" || true
	else
		echo "profile.sh: perf record failed: see $out/perf-record.log" >&2
	fi
	rm -f "$out/perf.data" "$out/perf.data.old"
else
	echo "profile.sh: perf is missing or not allowed here (perf_event_paranoid?): perf part skipped" >&2
fi

echo "profile.sh: wrote $out" >&2
ls "$out" >&2
