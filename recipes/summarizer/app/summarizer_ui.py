"""Summarizer recipe: summaries of texts longer than the model's context, with progress per chunk.

The text is cut into chunks measured with the model server's own tokenizer (llama-cpp-python's
`/extras/tokenize`, or llama.cpp server's `/tokenize`), at paragraph and sentence ends where
possible and by tokens where a single sentence is too long. The summary is then refined chunk by
chunk: the running summary plus the next chunk always fit the context.

Configuration:
  MODEL_ENDPOINT, MODEL_ENDPOINT_BEARER, MODEL_NAME   the model server (ai-lab contract)
  CONTEXT_SIZE      the server's context in tokens (default: llama.cpp's /props, else 2048)
  SUMMARY_TOKENS    longest summary in tokens (default 256)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import streamlit as st

MODEL_ENDPOINT = os.environ.get("MODEL_ENDPOINT", "http://localhost:8001").rstrip("/")
MODEL_ENDPOINT_BEARER = os.environ.get("MODEL_ENDPOINT_BEARER", "")
MODEL_NAME = os.environ.get("MODEL_NAME", "")
SUMMARY_TOKENS = int(os.environ.get("SUMMARY_TOKENS", "256"))
PROMPT_ALLOWANCE = 160  # the instructions around the text, in tokens, with room to spare
TIMEOUT = httpx.Timeout(600.0, connect=10.0)


class ModelError(Exception):
    """The model server refused a request."""


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {MODEL_ENDPOINT_BEARER}"} if MODEL_ENDPOINT_BEARER else {}


def post(path: str, body: dict[str, object]) -> dict[str, Any]:
    response = httpx.post(
        f"{MODEL_ENDPOINT}{path}", json=body, headers=auth_headers(), timeout=TIMEOUT
    )
    if response.status_code != 200:
        raise ModelError(f"{path} answered HTTP {response.status_code}: {response.text[:300]}")
    answer: dict[str, Any] = response.json()
    return answer


@dataclass(frozen=True)
class Tokenizer:
    """The server's own tokenizer; llama-cpp-python and llama.cpp's server name it differently."""

    tokenize_path: str
    text_field: str
    detokenize_path: str
    detokenized_field: str

    def tokens(self, text: str) -> list[int]:
        return list(post(self.tokenize_path, {self.text_field: text})["tokens"])

    def text(self, tokens: list[int]) -> str:
        return str(post(self.detokenize_path, {"tokens": tokens})[self.detokenized_field])


LLAMA_CPP_PYTHON = Tokenizer("/extras/tokenize", "input", "/extras/detokenize", "text")
LLAMA_SERVER = Tokenizer("/tokenize", "content", "/detokenize", "content")


def find_tokenizer() -> Tokenizer:
    for tokenizer in (LLAMA_CPP_PYTHON, LLAMA_SERVER):
        try:
            tokenizer.tokens("probe")
        except (ModelError, httpx.HTTPError, KeyError, ValueError):
            continue
        return tokenizer
    raise ModelError(
        "the model server offers no tokenizer endpoint (/extras/tokenize or /tokenize)"
    )


def context_size() -> int:
    if os.environ.get("CONTEXT_SIZE"):
        return int(os.environ["CONTEXT_SIZE"])
    try:  # llama.cpp's server reports it; llama-cpp-python does not
        props = httpx.get(f"{MODEL_ENDPOINT}/props", headers=auth_headers(), timeout=10).json()
        return int(props["default_generation_settings"]["n_ctx"])
    except (httpx.HTTPError, KeyError, ValueError, TypeError):
        return 2048


def split_by_tokens(text: str, budget: int, tokenizer: Tokenizer) -> list[str]:
    """Chunks of at most `budget` tokens, cut at paragraph, then sentence ends, then anywhere."""
    pieces: list[tuple[str, int]] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        count = len(tokenizer.tokens(paragraph))
        if count <= budget:
            pieces.append((paragraph, count))
            continue
        for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
            tokens = tokenizer.tokens(sentence)
            for start in range(0, len(tokens), budget):
                window = tokens[start : start + budget]
                part = sentence if len(tokens) <= budget else tokenizer.text(window)
                pieces.append((part, len(window)))
    chunks: list[tuple[str, int]] = []
    for piece, count in pieces:
        # A separator costs at most a token or two; count one extra per joined piece.
        if chunks and chunks[-1][1] + count + 2 <= budget:
            chunks[-1] = (f"{chunks[-1][0]}\n\n{piece}", chunks[-1][1] + count + 2)
        else:
            chunks.append((piece, count))
    return [chunk for chunk, _ in chunks]


def complete(prompt: str) -> str:
    body: dict[str, object] = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": SUMMARY_TOKENS,
        "temperature": 0,
    }
    if MODEL_NAME:
        body["model"] = MODEL_NAME
    answer = post("/v1/chat/completions", body)
    choices = answer.get("choices") or []
    return str(choices[0]["message"]["content"] or "").strip()


def summarize(chunks: list[str], on_chunk: Callable[[int, str], None]) -> str:
    """Refine: summarize the first chunk, then fold each next chunk into the running summary."""
    summary = ""
    for number, chunk in enumerate(chunks, start=1):
        if not summary:
            prompt = f"Summarize the following text in a few sentences.\n\nText:\n{chunk}"
        else:
            prompt = (
                "Here is a summary of the first part of a text:\n"
                f"{summary}\n\n"
                "Rewrite the summary so that it also covers the next part below. Answer with "
                f"the new summary only, in a few sentences.\n\nNext part:\n{chunk}"
            )
        summary = complete(prompt) or summary
        on_chunk(number, summary)
    return summary


st.set_page_config(page_title="Summarizer", page_icon="📝")
st.title("📝 Summarizer")
st.caption(f"Model server: {MODEL_ENDPOINT}" + (f" · model {MODEL_NAME}" if MODEL_NAME else ""))

upload = st.file_uploader("A text file (.txt or .md)", type=["txt", "md"])
pasted = st.text_area("…or paste the text", height=200)
if st.button("Summarize", type="primary"):
    text = upload.getvalue().decode("utf-8", errors="replace") if upload else pasted
    if not text.strip():
        st.warning("Give a text first.")
        st.stop()
    try:
        tokenizer = find_tokenizer()
        budget = context_size() - 2 * SUMMARY_TOKENS - PROMPT_ALLOWANCE
        if budget < 64:
            raise ModelError("the context is too small for SUMMARY_TOKENS; lower it")
        with st.spinner("Measuring the text with the model's tokenizer…"):
            chunks = split_by_tokens(text, budget, tokenizer)
        st.write(f"{len(text)} characters in {len(chunks)} chunks of at most {budget} tokens.")
        progress = st.progress(0.0, text=f"Chunk 0 of {len(chunks)}")
        log = st.container()

        def report(number: int, summary: str) -> None:
            progress.progress(number / len(chunks), text=f"Chunk {number} of {len(chunks)}")
            log.markdown(f"Chunk {number} of {len(chunks)} processed.")

        summary = summarize(chunks, report)
    except (ModelError, httpx.HTTPError) as exc:
        st.error(f"No summary: {exc}")
    else:
        st.subheader("Summary")
        with st.container(key="summary"):
            st.markdown(summary)
        st.caption(f"{len(summary)} characters, from {len(text)}.")
