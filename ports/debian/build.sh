#!/usr/bin/env bash
# Builds target/debian/ember_<version>_<arch>.deb with cargo-deb: the
# release binary, the systemd unit, /etc/default/ember, the maintainer
# scripts that create the `ember` system user, bash and zsh completions and
# the man page generated from the binary's own --help.
# Usage: ports/debian/build.sh [--target <rust target triple>]
# With --target the binary is cross-built (that target's toolchain and
# linker must be installed); completions and the man page come from a host
# build of the same source, since the cross-built binary cannot run here.
set -euo pipefail
cd "$(dirname "$0")/../.."

target_args=()
if [ "${1:-}" = "--target" ]; then
    target_args=(--target "$2")
fi

command -v cargo-deb >/dev/null || {
    echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 1
}

cargo build --release --bin ember
if [ ${#target_args[@]} -gt 0 ]; then
    cargo build --release --bin ember "${target_args[@]}"
fi

assets=target/deb-assets
mkdir -p "$assets"
host_bin=target/release/ember
"$host_bin" completion bash > "$assets/ember.bash"
"$host_bin" completion zsh > "$assets/_ember"
ports/debian/manpage.sh "$host_bin" | gzip -9n > "$assets/ember.1.gz"

cargo deb --no-build -p ember "${target_args[@]}"
