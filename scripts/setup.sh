#!/usr/bin/env bash
# Sets up everything Podlab needs on this machine; safe to run again (it only adds what is missing).
#   scripts/setup.sh app    system libraries for Qt, Podman, and .venv with Podlab + local engine
#   scripts/setup.sh test   the same plus test tools, test models and the test-only system parts
#   add --system-only to stop after the system packages (and, for test, the rootless test user):
#   CI runs that part in a clean container to prove it installs everything a feature needs.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=app
system_only=false
for arg in "$@"; do
  case "$arg" in
    app|test) profile=$arg ;;
    --system-only) system_only=true ;;
    *) echo "usage: scripts/setup.sh [app|test] [--system-only]" >&2; exit 2 ;;
  esac
done

app_packages=(python3 python3-venv python3-dev build-essential cmake git ca-certificates curl
  podman runc uidmap slirp4netns fuse-overlayfs catatonit
  fonts-dejavu-core libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0)
# chromium: the recipe apps' browser tests drive Debian's build through Playwright.
# desktop-file-utils, appstream, shared-mime-info: the validators of the desktop entry, metainfo and MIME type.
# flatpak-builder: reads the Flatpak manifest offline (--show-manifest) in the packaging tests.
test_packages=(mmdebstrap openssl openssh-server xvfb x11-utils passwd util-linux chromium
  desktop-file-utils appstream shared-mime-info flatpak-builder)

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

if [ "$profile" = test ] && [ "$(id -u)" = 0 ]; then
  # The rootless test tier: an ordinary user whose own Podman serves containers (useradd fills
  # /etc/subuid and /etc/subgid), and /dev/net/tun usable by users for rootless networking.
  id podlab-test >/dev/null 2>&1 || useradd -m podlab-test
  [ ! -c /dev/net/tun ] || chmod 666 /dev/net/tun
fi
"$system_only" && { echo "setup: system part done"; exit 0; }

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=$candidate; break
  fi
done
[ -n "$python" ] || { echo "setup: Python 3.11 or newer is needed" >&2; exit 1; }

[ -x .venv/bin/python ] || "$python" -m venv .venv

# llama.cpp compiled for a portable x86-64 baseline (AVX2, FMA, F16C), never for this machine's own
# CPU: a native build enables AVX-512/AMX where the builder has them and then faults on other CPUs
# (and the model-server image carries the same wheel to every machine). arm64 uses its baseline.
llama_version=$(sed -nE 's/^llama[-_]cpp[-_]python==//p' constraints.txt)
case "$(uname -m)" in
  x86_64) llama_cmake="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" ;;
  *) llama_cmake="-DGGML_NATIVE=OFF" ;;
esac
# Built once per version and flags into a cache outside the checkout, so a fresh clone (CI) reuses
# it; pip's own wheel cache is not keyed by CMAKE_ARGS and could hand back a native build.
llama_key=$(printf '%s %s %s' "$llama_version" "$(uname -m)" "$llama_cmake" | sha256sum | cut -c1-12)
llama_wheels="${XDG_CACHE_HOME:-$HOME/.cache}/podlab/llama-wheels/$llama_key"
if ! ls "$llama_wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "setup: compiling llama.cpp $llama_version for a portable CPU baseline (about 5 minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  mkdir -p "$llama_wheels.tmp"
  CMAKE_ARGS="$llama_cmake" .venv/bin/python -m pip wheel -q --no-cache-dir --no-deps \
    --no-binary llama-cpp-python "llama-cpp-python==$llama_version" -w "$llama_wheels.tmp"
  rm -rf "$llama_wheels" && mv "$llama_wheels.tmp" "$llama_wheels"
fi

extras="local"
[ "$profile" = test ] && extras="local,test"
# One stamp for what is installed: the test profile is a superset of the app profile, so running
# the app after the tests (or the reverse) reinstalls nothing unless the requirements changed.
inputs=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
have=$(cat .venv/.podlab-installed 2>/dev/null || true)
if [ "$have" != "test-$inputs" ] && [ "$have" != "$profile-$inputs" ]; then
  echo "setup: installing Podlab into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q --find-links "$llama_wheels" -c constraints.txt -e ".[$extras]"
  echo "$profile-$inputs" > .venv/.podlab-installed
fi

if [ "$profile" = test ]; then
  # Wheels of the llama-cpp-python installed above (and its server's dependencies), so that the
  # tests build Podlab's model-server image without compiling llama.cpp again in the container.
  version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))')
  if ! ls .venv/wheelhouse/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
    echo "setup: collecting the llama-cpp-python $version wheelhouse for image builds"
    .venv/bin/python -m pip wheel -q --find-links "$llama_wheels" -c constraints.txt \
      "llama-cpp-python[server]==$version" -w .venv/wheelhouse
  fi
  # llama.cpp's own llama-server (what the RamaLama images run), for the tests that serve
  # through it: compiled once per version and flags into ~/.cache/podlab/llama-server/.
  scripts/build-llama-server.sh >/dev/null
fi
