#!/usr/bin/env bash
# Runs every Go fuzz target of the module for DURATION each, FUZZJOBS targets at a time, and
# fails if any target fails (a crasher is written to that package's testdata/fuzz/<Target>/ by
# `go test`: commit it with the fix, and it stays a regression test).
#
#   scripts/fuzz.sh DURATION [PACKAGE...]
#
# DURATION is a -fuzztime value: 10s (CI), 10m (make fuzz), 1h, or 5000x (iterations).
#
# FUZZJOBS (default: the number of CPUs) targets run at once, each with one fuzzing worker
# (-parallel=1), so the machine stays as busy as one target with a worker per CPU while the
# wall time divides by FUZZJOBS. Set FUZZFLAGS for extra go test flags.
#
# Go 1.26's fuzz coordinator can report a bare "context deadline exceeded" when a duration
# -fuzztime ends while a worker is busy (golang/go#75804, fixed in Go 1.27): no input was found
# and none is written. Such a failure is retried as a deterministic replay of the target's corpus
# (seeds and testdata/fuzz); it counts as a pass only if the replay passes and no failing input
# was written. Any other failure fails the run.
# Targets are discovered with `go test -list` in each package that declares a Fuzz function
# (default: every package of the module), so a new Fuzz* function is picked up without editing
# this script.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [ -z "$1" ]; then
	echo "usage: $0 DURATION [PACKAGE...]   (DURATION: 10s, 10m, 1h, 5000x)" >&2
	exit 2
fi
duration=$1
shift
pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	mapfile -t pkgs < <(go list ./...)
fi
jobs=${FUZZJOBS:-$(nproc)}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# Discover the targets: -list compiles the package's tests, so a package that fails to build is
# a failure too.
failed=()
targets=()
for pkg in "${pkgs[@]}"; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	grep -qs '^func Fuzz' "$dir"/*_test.go || continue
	if ! list=$(go test -run '^$' -list '^Fuzz' "$pkg" 2>&1); then
		echo "fuzz: listing $pkg failed:" >&2
		echo "$list" >&2
		failed+=("$pkg (build)")
		continue
	fi
	for target in $(printf '%s\n' "$list" | grep -E '^Fuzz[A-Za-z0-9_]*$' || true); do
		targets+=("$pkg $target")
	done
done

# fuzz_one PKG TARGET LOG: runs one target; exit 0 on a pass, 3 on a pass after the corpus
# replay (golang/go#75804), 1 on a failure.
fuzz_one() {
	local pkg=$1 target=$2 log=$3
	# shellcheck disable=SC2086 # FUZZFLAGS is a list of flags
	if go test -parallel=1 ${FUZZFLAGS:-} -run '^$' -fuzz "^${target}\$" -fuzztime "$duration" "$pkg" >"$log" 2>&1; then
		return 0
	fi
	if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written to' "$log" &&
		go test -count=1 -run "^${target}\$" "$pkg" >>"$log" 2>&1; then
		echo "fuzz: $pkg $target: the coordinator's deadline race (golang/go#75804), no input found; corpus replay passed" >>"$log"
		return 3
	fi
	return 1
}

start=$(date +%s)
declare -A running=() # pid -> "pkg target"
declare -A logof=()   # pid -> its log file
flaked=()
# reap waits for one running target and reports it.
reap() {
	local pid rc=0
	wait -n -p pid "${!running[@]}" || rc=$?
	local job=${running[$pid]}
	unset "running[$pid]"
	echo "=== fuzz $job for $duration"
	cat "${logof[$pid]}"
	case $rc in
	0) ;;
	3) flaked+=("$job") ;;
	*) failed+=("$job") ;;
	esac
}
for i in "${!targets[@]}"; do
	job=${targets[$i]}
	while [ ${#running[@]} -ge "$jobs" ]; do reap; done
	read -r pkg target <<<"$job"
	fuzz_one "$pkg" "$target" "$logs/$i.log" &
	running[$!]=$job
	logof[$!]=$logs/$i.log
done
while [ ${#running[@]} -gt 0 ]; do reap; done

elapsed=$(($(date +%s) - start))
echo "fuzz: ${#targets[@]} targets, $duration each, $jobs at a time, ${elapsed}s in all"
if [ ${#flaked[@]} -gt 0 ]; then
	echo "fuzz: passed after a corpus replay (golang/go#75804):"
	printf '  %s\n' "${flaked[@]}"
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: FAILED:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
