#!/usr/bin/env bash
# Runs every Go fuzz target of the module, one at a time, for DURATION each, and fails if any
# target fails (a crasher is written to that package's testdata/fuzz/<Target>/ by `go test`:
# commit it with the fix, and it stays a regression test).
#
#   scripts/fuzz.sh DURATION [PACKAGE...]
#
# DURATION is a -fuzztime value: 10s (CI), 10m (make fuzz), 1h, or 5000x (iterations).
#
# Go 1.26's fuzz coordinator can report a bare "context deadline exceeded" when a duration
# -fuzztime ends while a worker is busy (golang/go#75804, fixed in Go 1.27): no input was found
# and none is written. Such a failure is retried as a deterministic replay of the target's corpus
# (seeds and testdata/fuzz); it counts as a pass only if the replay passes and no failing input
# was written. Any other failure fails the run.
# Targets are discovered with `go test -list` in each package (default: ./...), so a new Fuzz*
# function is picked up without editing this script. Set FUZZFLAGS for extra go test flags
# (for example FUZZFLAGS=-parallel=1 on a busy machine).
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

failed=()
flaked=()
ran=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
for pkg in "${pkgs[@]}"; do
	# -list compiles the package's tests; a package that fails to build is a failure too.
	if ! list=$(go test -run '^$' -list '^Fuzz' "$pkg" 2>&1); then
		echo "fuzz: listing $pkg failed:" >&2
		echo "$list" >&2
		failed+=("$pkg (build)")
		continue
	fi
	targets=$(printf '%s\n' "$list" | grep -E '^Fuzz[A-Za-z0-9_]*$' || true)
	for target in $targets; do
		echo "=== fuzz $pkg $target for $duration"
		ran=$((ran + 1))
		# shellcheck disable=SC2086 # FUZZFLAGS is a list of flags
		if go test ${FUZZFLAGS:-} -run '^$' -fuzz "^${target}\$" -fuzztime "$duration" "$pkg" 2>&1 | tee "$log"; then
			continue
		fi
		if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written to' "$log" &&
			go test -count=1 -run "^${target}\$" "$pkg"; then
			echo "fuzz: $pkg $target: the coordinator's deadline race (golang/go#75804), no input found; corpus replay passed"
			flaked+=("$pkg $target")
			continue
		fi
		failed+=("$pkg $target")
	done
done

elapsed=$(($(date +%s) - start))
echo "fuzz: $ran targets, $duration each, ${elapsed}s in all"
if [ ${#flaked[@]} -gt 0 ]; then
	echo "fuzz: passed after a corpus replay (golang/go#75804):"
	printf '  %s\n' "${flaked[@]}"
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: FAILED:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
if [ "$ran" -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
