#!/usr/bin/env bash
# Builds docker.io/library/debian:bookworm-slim into the local Podman store when it is absent,
# exactly as Debian makes it (mmdebstrap), because no registry can be reached: tests and the CI
# system-setup check start containers from it with --pull=never. Honours CONTAINERS_CONF.
set -euo pipefail
image=docker.io/library/debian:bookworm-slim
podman image exists "$image" && exit 0
command -v mmdebstrap >/dev/null || { echo "base-image: apt-get install -y mmdebstrap" >&2; exit 1; }
work=$(mktemp -d /tmp/podlab-base-XXXXXX)
trap 'rm -rf "$work"' EXIT
mmdebstrap --variant=apt --include=ca-certificates bookworm "$work/bookworm.tar" >/dev/null
podman import "$work/bookworm.tar" "$image" >/dev/null
echo "base-image: built $image"
