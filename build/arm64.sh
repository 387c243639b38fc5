#!/usr/bin/env bash
# `make build`: a Lambda for arm64 (Graviton, provided.al2023), as target/lambda/<bin>/bootstrap; `sam build`
# (BuildMethod: makefile) runs it too, through the build-<LogicalId> targets of the Makefiles.
#
# rustup's aarch64 standard library cannot be fetched here, so this uses Debian's own Rust, which ships one:
# rustc-web (/usr/bin/rustc, beside rustup's) with libstd-rust-web-dev:arm64, and the aarch64 cross gcc
# for the linker and the C code (aws-lc, zstd, mimalloc). What is missing is installed first (as root, or
# with sudo), then the binary is built in a target directory of its own, stripped by the release profile,
# and checked with `file` and for a glibc symbol newer than provided.al2023's 2.34.
# Usage: build/arm64.sh [BIN] (default evs-archiver; evs-balances from its crate).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-evs-archiver}
package=$([ "$bin" = evs-balances ] && echo evs-balances || echo evs-lambda)
packages=(rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
sudo=$([ "$(id -u)" = 0 ] && echo || echo sudo)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  dpkg --print-foreign-architectures | grep -qx arm64 || $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR=target/arm64
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
echo "== $($RUSTC --version), building $bin for aarch64-unknown-linux-gnu"
start=$(date +%s)
/usr/bin/cargo build --locked --release --target aarch64-unknown-linux-gnu -p "$package" --bin "$bin"
out=target/lambda/$bin
mkdir -p "$out"
cp "target/arm64/aarch64-unknown-linux-gnu/release/$bin" "$out/bootstrap"
kind=$(file -b "$out/bootstrap")
case "$kind" in
  *"ARM aarch64"*) ;;
  *) echo "error: $out/bootstrap is not an aarch64 executable: $kind" >&2; exit 1 ;;
esac
# The cross binutils (installed with the cross gcc) read aarch64 objects whatever the host's objdump reads.
glibc=$(aarch64-linux-gnu-objdump -T "$out/bootstrap" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
# provided.al2023 has glibc 2.34: a binary that needs a newer symbol would not start there.
if [ "$(printf '%s\n' "$glibc" GLIBC_2.34 | sort -V | tail -1)" != GLIBC_2.34 ]; then
  echo "error: $out/bootstrap needs $glibc, newer than provided.al2023's GLIBC_2.34" >&2
  exit 1
fi
echo "$out/bootstrap: $(stat -c %s "$out/bootstrap") bytes, built in $(( $(date +%s) - start )) s; $kind; newest symbol $glibc"
