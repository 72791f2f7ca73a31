#!/bin/sh
# Runs inside the image build with the build context mounted at /podlab-context (read-only).
set -eu
version="$1"
context=/podlab-context
requirement="llama-cpp-python[server]==${version}"

python3 -m venv /opt/venv
pip="/opt/venv/bin/pip"
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

if [ -f "$context/host-ca/ca-certificates.crt" ]; then
    echo "podlab: using the host CA bundle for HTTPS"
    export PIP_CERT="$context/host-ca/ca-certificates.crt"
    export SSL_CERT_FILE="$PIP_CERT"
fi

if ls "$context"/wheels/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "podlab: installing from the wheelhouse in the build context (no compiling)"
    "$pip" install --no-index --find-links "$context/wheels" "$requirement"
else
    echo "podlab: no wheelhouse; compiling llama.cpp from PyPI (this takes several minutes)"
    apt-get update
    apt-get install -y --no-install-recommends build-essential cmake python3-dev
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "$pip" install "$requirement"
    apt-get purge -y --auto-remove build-essential cmake python3-dev
    rm -rf /var/lib/apt/lists/*
fi
/opt/venv/bin/python -c "import llama_cpp, llama_cpp.server; print('podlab: llama-cpp-python', llama_cpp.__version__)"
