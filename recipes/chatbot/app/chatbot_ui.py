"""Chatbot recipe: chat with the pod's model server, answers streamed in, speed shown per answer.

Configuration (the ai-lab-recipes contract):
  MODEL_ENDPOINT         the model server, e.g. http://localhost:8001 (the app calls .../v1)
  MODEL_ENDPOINT_BEARER  a key the model server requires, sent as `Authorization: Bearer`
  MODEL_NAME             the model name to ask for (servers with one model ignore it)
  MAX_TOKENS             longest answer in tokens (default 1024)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import streamlit as st

MODEL_ENDPOINT = os.environ.get("MODEL_ENDPOINT", "http://localhost:8001").rstrip("/")
MODEL_ENDPOINT_BEARER = os.environ.get("MODEL_ENDPOINT_BEARER", "")
MODEL_NAME = os.environ.get("MODEL_NAME", "")
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "1024"))
SYSTEM_PROMPT = os.environ.get("SYSTEM_PROMPT", "You are a helpful assistant.")


class ModelError(Exception):
    """The model server refused or broke off an answer."""


@dataclass
class Speed:
    """Measured from the stream itself: time to first token, tokens and tokens per second."""

    started: float = 0.0
    first_token: float | None = None
    finished: float | None = None
    tokens: int = 0
    server_tokens: int | None = None

    def text(self) -> str:
        tokens = self.server_tokens or self.tokens
        if self.first_token is None or self.finished is None or tokens == 0:
            return "no tokens received"
        generating = max(self.finished - self.first_token, 1e-6)
        rate = (tokens - 1) / generating if tokens > 1 else 0.0
        return (
            f"{tokens} tokens · {rate:.1f} tokens/s · "
            f"first token after {(self.first_token - self.started) * 1000:.0f} ms"
        )


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {MODEL_ENDPOINT_BEARER}"} if MODEL_ENDPOINT_BEARER else {}


def stream_answer(messages: list[dict[str, str]], speed: Speed) -> Iterator[str]:
    """The answer's text pieces from an OpenAI-compatible streaming chat completion."""
    body: dict[str, object] = {"messages": messages, "stream": True, "max_tokens": MAX_TOKENS}
    if MODEL_NAME:
        body["model"] = MODEL_NAME
    speed.started = time.monotonic()
    timeout = httpx.Timeout(600.0, connect=10.0)
    with httpx.stream(
        "POST",
        f"{MODEL_ENDPOINT}/v1/chat/completions",
        json=body,
        headers=auth_headers(),
        timeout=timeout,
    ) as response:
        if response.status_code != 200:
            detail = response.read().decode("utf-8", errors="replace")[:500]
            raise ModelError(f"the model server answered HTTP {response.status_code}: {detail}")
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators and ': keep-alive' comments
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if event.get("error"):
                raise ModelError(f"the model server stopped: {event['error']}")
            usage = event.get("usage") or {}
            if usage.get("completion_tokens"):
                speed.server_tokens = int(usage["completion_tokens"])
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    if speed.first_token is None:
                        speed.first_token = time.monotonic()
                    speed.tokens += 1
                    yield piece
    speed.finished = time.monotonic()


st.set_page_config(page_title="Chatbot", page_icon="💬")
st.title("💬 Chatbot")
st.caption(f"Model server: {MODEL_ENDPOINT}" + (f" · model {MODEL_NAME}" if MODEL_NAME else ""))

if "messages" not in st.session_state:
    st.session_state.messages = []

with st.sidebar:
    if st.button("New conversation"):
        st.session_state.messages = []
        st.rerun()

for message in st.session_state.messages:
    with st.chat_message(message["role"]):
        st.markdown(message["content"])
        if message.get("speed"):
            st.caption(message["speed"])

if prompt := st.chat_input("Ask the model"):
    st.session_state.messages.append({"role": "user", "content": prompt})
    with st.chat_message("user"):
        st.markdown(prompt)
    history = [{"role": "system", "content": SYSTEM_PROMPT}] + [
        {"role": m["role"], "content": m["content"]} for m in st.session_state.messages
    ]
    with st.chat_message("assistant"):
        speed = Speed()
        try:
            answer = st.write_stream(stream_answer(history, speed))
        except (ModelError, httpx.HTTPError, json.JSONDecodeError) as exc:
            st.error(f"No answer: {exc}")
        else:
            text = answer if isinstance(answer, str) else "".join(map(str, answer))
            st.caption(speed.text())
            st.session_state.messages.append(
                {"role": "assistant", "content": text, "speed": speed.text()}
            )
