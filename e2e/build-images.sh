#!/usr/bin/env bash
# Builds the valori-node (with the `valori` audit command) and valori-operator images from binaries built on this host, on
# `scratch` (no registry is needed: nothing is pulled). Each image holds exactly the binary
# (debug symbols stripped), the shared libraries `ldd` lists for it, the system's CA roots,
# /etc/passwd and /etc/group for its non-root user, and for the node its data directory.
#
#   e2e/build-images.sh            # dev-profile binaries (what the test suite builds)
#   PROFILE=release e2e/build-images.sh
#   SKIP_BUILD=1 e2e/build-images.sh   # use binaries already in the target directory
#
# Tags: valori-node:$TAG and valori-operator:$TAG (TAG defaults to the crates' version).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-debug}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
tag="${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}"
flag=()
[ "$profile" = release ] && flag=(--release)
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build "${flag[@]}" -p valori-node --bin valori-node --bin valori
  cargo build "${flag[@]}" -p valori-operator --bin valori-operator
fi

# image NAME UID [EXTRA_BINARY...]: the binary NAME (its entrypoint) and any extra binaries
# (the node's image also holds the `valori` audit command).
image() {
  local name=$1 uid=$2
  shift 2
  local ctx
  ctx="$(mktemp -d)"
  trap 'rm -rf "$ctx"' RETURN
  mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc" "$ctx/data"
  for b in "$name" "$@"; do
    local bin="$target/$profile/$b"
    [ -x "$bin" ] || { echo "build-images: $bin is missing" >&2; exit 1; }
    objcopy --strip-debug "$bin" "$ctx/rootfs/usr/local/bin/$b"
    # The dynamic loader and every library the binary links, at the same paths.
    for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }'); do
      mkdir -p "$ctx/rootfs$(dirname "$lib")"
      cp -L "$lib" "$ctx/rootfs$lib"
    done
  done
  # The system's CA roots: the HTTP clients (a follower's, the operator's, the trace exporter)
  # refuse to start without any.
  mkdir -p "$ctx/rootfs/etc/ssl/certs"
  cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/:/sbin/nologin\n%s:x:%s:%s:%s:/data:/sbin/nologin\n' "$name" "$uid" "$uid" "$name" > "$ctx/rootfs/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$name" "$uid" > "$ctx/rootfs/etc/group"
  # (The engine's note that its legacy builder is deprecated is left out.)
  docker build --quiet -t "$name:$tag" -f "e2e/images/$name.Dockerfile" "$ctx" 2>&1 > /dev/null \
    | { grep -v -i -e 'legacy builder' -e buildx -e '^[[:space:]]*$' || true; } >&2
  printf '%-28s %s\n' "$name:$tag" "$(docker image inspect -f '{{.Size}}' "$name:$tag" | awk '{ printf "%.1f MB", $1 / 1e6 }')"
}

image valori-node 10001 valori
image valori-operator 65532
