#!/bin/sh
# Starts llama-cpp-python's server from the ai-lab-recipes environment contract.
#   MODEL_PATH (required unless CONFIG_PATH), HOST (0.0.0.0), PORT (8000), GPU_LAYERS (0),
#   CTX_SIZE (2048), MODEL_CHAT_FORMAT, THREADS, PARALLEL, CONFIG_PATH, MODEL_ALIAS.
# Extra arguments given to the container are passed on to the server.
set -eu
# llama-cpp-python's server behind Podlab's guard: PODLAB_API_KEY (when set) is required as a
# bearer key, Host must be a loopback name (or in PODLAB_ALLOWED_HOSTS), no foreign Origin.
SERVER=/usr/local/lib/podlab/podlab_guarded_server.py

if [ -n "${CONFIG_PATH:-}" ]; then
    exec python "$SERVER" --config_file "$CONFIG_PATH" "$@"
fi

if [ -z "${MODEL_PATH:-}" ]; then
    echo "podlab-model-server: MODEL_PATH is not set (mount a GGUF file and point MODEL_PATH at it)" >&2
    exit 2
fi
if [ ! -r "$MODEL_PATH" ]; then
    echo "podlab-model-server: cannot read the model file $MODEL_PATH (is it mounted, and readable by uid $(id -u)?)" >&2
    exit 2
fi

set -- --model "$MODEL_PATH" \
    --host "${HOST:-0.0.0.0}" \
    --port "${PORT:-8000}" \
    --n_gpu_layers "${GPU_LAYERS:-0}" \
    --n_ctx "${CTX_SIZE:-2048}" \
    --interrupt_requests false \
    "$@"
if [ -n "${MODEL_ALIAS:-}" ]; then
    set -- "$@" --model_alias "$MODEL_ALIAS"
fi
if [ -n "${MODEL_CHAT_FORMAT:-}" ]; then
    set -- "$@" --chat_format "$MODEL_CHAT_FORMAT"
fi
if [ -n "${THREADS:-}" ]; then
    set -- "$@" --n_threads "$THREADS" --n_threads_batch "$THREADS"
fi
if [ -n "${PARALLEL:-}" ] && [ "${PARALLEL}" != "1" ]; then
    # llama-cpp-python serves one request at a time; say so instead of failing.
    echo "podlab-model-server: PARALLEL=${PARALLEL} ignored (llama-cpp-python serves one request at a time)" >&2
fi
echo "podlab-model-server: python $SERVER $*" >&2
exec python "$SERVER" "$@"
