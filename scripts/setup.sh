#!/usr/bin/env bash
# Sets up everything Podlab needs on this machine; safe to run again (it only adds what is missing).
#   scripts/setup.sh app    system libraries for Qt, Podman, and .venv with Podlab + local engine
#   scripts/setup.sh test   the same plus test tools, test models and the test-only system parts
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-app}

app_packages=(python3 python3-venv python3-dev build-essential cmake git ca-certificates curl
  podman runc uidmap slirp4netns fuse-overlayfs
  fonts-dejavu-core libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0)
test_packages=(mmdebstrap openssl)

wanted=("${app_packages[@]}")
[ "$profile" = test ] && wanted+=("${test_packages[@]}")

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: these system packages are missing; install them, then run this again:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    [ "$profile" = test ] && exit 1
  fi
fi

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=$candidate; break
  fi
done
[ -n "$python" ] || { echo "setup: Python 3.11 or newer is needed" >&2; exit 1; }

[ -x .venv/bin/python ] || "$python" -m venv .venv
extras="local"
[ "$profile" = test ] && extras="local,test"
# Reinstall only when the project's requirements changed since the last successful install.
stamp=".venv/.podlab-installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Podlab into .venv (the first time compiles llama.cpp: about 5 minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  rm -f .venv/.podlab-installed-*
  touch "$stamp"
fi

if [ "$profile" = test ]; then
  # Wheels of the llama-cpp-python installed above (and its server's dependencies), so that the
  # tests build Podlab's model-server image without compiling llama.cpp again in the container.
  version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))')
  if ! ls .venv/wheelhouse/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
    echo "setup: collecting the llama-cpp-python $version wheelhouse for image builds"
    .venv/bin/python -m pip wheel -q "llama-cpp-python[server]==$version" -w .venv/wheelhouse
  fi
fi
