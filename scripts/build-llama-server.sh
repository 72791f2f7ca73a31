#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` (the server the RamaLama images run) from the vendored
# llama.cpp of the llama-cpp-python sdist, offline, for a portable CPU baseline. Built once per
# version, architecture and flags into a cache outside the checkout (about 5 minutes on 2 cores);
# prints the cache folder, which holds bin/llama-server and the shared libraries it links.
#   scripts/build-llama-server.sh [VERSION]     (default: llama-cpp-python's pin in constraints.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-$(sed -nE 's/^llama[-_]cpp[-_]python==//p' constraints.txt)}
python=.venv/bin/python
[ -x "$python" ] || python=python3

# The same baseline as the llama-cpp-python wheel in setup.sh: never this machine's own CPU.
case "$(uname -m)" in
  x86_64) arch_flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" ;;
  *) arch_flags="-DGGML_NATIVE=OFF" ;;
esac
# No web UI (its prebuilt assets would be downloaded), no curl, no tests or examples.
cmake_flags="$arch_flags -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release \
-DCMAKE_INSTALL_RPATH=\$ORIGIN/../lib -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON"
key=$(printf '%s %s %s' "$version" "$(uname -m)" "$cmake_flags" | sha256sum | cut -c1-12)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/podlab/llama-server/$version-$key"

if [ ! -x "$cache/bin/llama-server" ]; then
  echo "build-llama-server: compiling llama-server $version (about 5 minutes)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$python" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work" >&2
  tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
  src="$work/llama_cpp_python-$version/vendor/llama.cpp"
  # shellcheck disable=SC2086  # the flags are words on purpose
  cmake -S "$src" -B "$work/build" $cmake_flags >/dev/null
  cmake --build "$work/build" --target llama-server -j"$(nproc)" >/dev/null
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp/bin" "$cache.tmp/lib"
  cp "$work/build/bin/llama-server" "$cache.tmp/bin/"
  # The shared libraries of llama.cpp itself (libllama, libggml*), found where cmake put them.
  find "$work/build" -name '*.so*' \( -type f -o -type l \) -exec cp -P {} "$cache.tmp/lib/" \;
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
echo "$cache"
