#!/usr/bin/env bash
# Installs what naquid's tests and tools need on a fresh Debian machine, idempotently:
#   - iproute2 (ip netns, veth) and ethtool for the network-namespace and AF_XDP tests,
#   - staticcheck (honnef.co/go/tools v0.8.2) into ./.bin.
# Packages are installed only when missing and only when running as root; otherwise the script
# says what is missing and the tests that need it skip with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ethtool >/dev/null 2>&1 || need+=(ethtool)
if ((${#need[@]})); then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "setup: installing ${need[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	else
		echo "setup: missing ${need[*]} (not root or no apt-get): namespace tests will skip" >&2
	fi
fi

if [ ! -x .bin/staticcheck ] || ! .bin/staticcheck -version 2>/dev/null | grep -q '(0.8.2)'; then
	echo "setup: installing staticcheck v0.8.2 into .bin"
	GOBIN="$PWD/.bin" GOFLAGS=-mod=mod go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
