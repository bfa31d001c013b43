#!/usr/bin/env bash
# Builds what the GPU check carries to a lent GPU machine: the release binary and the engine
# test binary, stripped and compressed into kit.tar.xz in a git-ignored folder (default
# .carry/gpu). Run it here, then carry that folder with the working tree and run
# scripts/gpu_check.sh there (docs/devices.md).
set -euo pipefail
# A folder given is the caller's; the default is the repository's.
kit="${1:-$(dirname "$0")/../.carry/gpu}"
mkdir -p "$kit"
kit=$(cd "$kit" && pwd)
cd "$(dirname "$0")/.."
limit_mib=64

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/atheria/target}"
cargo build --release --bin atheria
# The engine tests' executable is named by a hash: ask cargo for it.
engine=$(cargo test --release --test engine --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*engine-[^"]*"' | tail -1 | cut -d'"' -f4)
if [ -z "$engine" ] || [ ! -x "$engine" ]; then
    echo "error: cargo did not report the engine test binary" >&2
    exit 1
fi

# Stripped, the two binaries are about 170 MB (the GPU runtimes, the embedded models and
# fixtures); xz brings them to about a fifth, under the limit.
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
strip -o "$staging/atheria" "$CARGO_TARGET_DIR/release/atheria"
strip -o "$staging/engine" "$engine"
rm -f "$kit/kit.tar.xz"
XZ_OPT="-6 -T2" tar -C "$staging" -cJf "$kit/kit.tar.xz" atheria engine
size_mib=$(( ($(stat -c %s "$kit/kit.tar.xz") + 1048575) / 1048576 ))
echo "kit: $kit/kit.tar.xz ($size_mib MiB)"
if [ "$size_mib" -gt "$limit_mib" ]; then
    echo "error: the kit is $size_mib MiB, more than the $limit_mib MiB a lent machine takes" >&2
    exit 1
fi
