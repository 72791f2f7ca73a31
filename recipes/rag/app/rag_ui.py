"""RAG recipe: answer questions from your own documents, citing the file and passage used.

Documents (.txt, .md, .pdf) are split into passages, embedded by an embedding model server
(`/v1/embeddings`), and stored with those vectors in Chroma; a question is embedded the same way,
the nearest passages are retrieved and given to the chat model, and the answer lists them.

Configuration:
  MODEL_ENDPOINT, MODEL_ENDPOINT_BEARER, MODEL_NAME   the chat model server (ai-lab contract)
  EMBEDDING_ENDPOINT         the embedding model server (default: MODEL_ENDPOINT)
  EMBEDDING_ENDPOINT_BEARER  its key (default: MODEL_ENDPOINT_BEARER)
  EMBEDDING_MODEL            the embedding model name to ask for (optional)
  VECTORDB_HOST, VECTORDB_PORT, VECTORDB_NAME         Chroma server and collection
  CHUNK_SIZE                 passage length in characters (default 600)
  TOP_K                      passages given to the model per question (default 3)
  MAX_TOKENS                 longest answer in tokens (default 512)
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterator

import chromadb
import httpx
import streamlit as st
from pypdf import PdfReader

MODEL_ENDPOINT = os.environ.get("MODEL_ENDPOINT", "http://localhost:8001").rstrip("/")
MODEL_ENDPOINT_BEARER = os.environ.get("MODEL_ENDPOINT_BEARER", "")
MODEL_NAME = os.environ.get("MODEL_NAME", "")
EMBEDDING_ENDPOINT = os.environ.get("EMBEDDING_ENDPOINT", MODEL_ENDPOINT).rstrip("/")
EMBEDDING_ENDPOINT_BEARER = os.environ.get("EMBEDDING_ENDPOINT_BEARER", MODEL_ENDPOINT_BEARER)
EMBEDDING_MODEL = os.environ.get("EMBEDDING_MODEL", "")
VECTORDB_HOST = os.environ.get("VECTORDB_HOST", "localhost")
VECTORDB_PORT = int(os.environ.get("VECTORDB_PORT", "8000"))
VECTORDB_NAME = os.environ.get("VECTORDB_NAME", "rag-documents")
CHUNK_SIZE = max(100, int(os.environ.get("CHUNK_SIZE", "600")))
TOP_K = max(1, int(os.environ.get("TOP_K", "3")))
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "512"))
EMBEDDING_BATCH = 16
TIMEOUT = httpx.Timeout(600.0, connect=10.0)


class ModelError(Exception):
    """A model server refused or broke off a request."""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def extract_text(name: str, data: bytes) -> str:
    if name.lower().endswith(".pdf"):
        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    return data.decode("utf-8", errors="replace")


def split_passages(text: str, size: int = CHUNK_SIZE) -> list[str]:
    """Passages of at most `size` characters, cut at paragraph, then sentence, then word ends."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        if len(paragraph) <= size:
            pieces.append(paragraph)
            continue
        for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
            while len(sentence) > size:
                cut = sentence.rfind(" ", 0, size)
                cut = cut if cut > 0 else size
                pieces.append(sentence[:cut])
                sentence = sentence[cut:].strip()
            if sentence:
                pieces.append(sentence)
    passages: list[str] = []
    for piece in pieces:
        if passages and len(passages[-1]) + 1 + len(piece) <= size:
            passages[-1] = f"{passages[-1]} {piece}"
        else:
            passages.append(piece)
    return passages


def normalized(vector: list[float]) -> list[float]:
    """Unit length, so Chroma's default L2 distance ranks exactly as cosine similarity."""
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def embed(texts: list[str]) -> list[list[float]]:
    vectors: list[list[float]] = []
    for start in range(0, len(texts), EMBEDDING_BATCH):
        body: dict[str, object] = {"input": texts[start : start + EMBEDDING_BATCH]}
        if EMBEDDING_MODEL:
            body["model"] = EMBEDDING_MODEL
        response = httpx.post(
            f"{EMBEDDING_ENDPOINT}/v1/embeddings",
            json=body,
            headers=bearer(EMBEDDING_ENDPOINT_BEARER),
            timeout=TIMEOUT,
        )
        if response.status_code != 200:
            raise ModelError(
                f"the embedding server answered HTTP {response.status_code}: {response.text[:300]}"
            )
        rows = sorted(response.json()["data"], key=lambda row: row["index"])
        vectors += [normalized(row["embedding"]) for row in rows]
    return vectors


@st.cache_resource
def collection() -> chromadb.Collection:
    client = chromadb.HttpClient(host=VECTORDB_HOST, port=VECTORDB_PORT)
    # Our own vectors: no embedding function, so Chroma never fetches a model at run time.
    return client.get_or_create_collection(VECTORDB_NAME, embedding_function=None)


def add_document(name: str, data: bytes) -> int:
    digest = hashlib.sha256(data).hexdigest()[:16]
    passages = split_passages(extract_text(name, data))
    if not passages:
        return 0
    collection().upsert(
        ids=[f"{digest}-{number}" for number in range(1, len(passages) + 1)],
        documents=passages,
        embeddings=embed(passages),
        metadatas=[{"source": name, "passage": n} for n in range(1, len(passages) + 1)],
    )
    return len(passages)


def retrieve(question: str) -> list[dict[str, object]]:
    found = collection().query(
        query_embeddings=embed([question]),
        n_results=TOP_K,
        include=["documents", "metadatas", "distances"],
    )
    documents = (found.get("documents") or [[]])[0]
    metadatas = (found.get("metadatas") or [[]])[0]
    return [
        {"source": meta["source"], "passage": meta["passage"], "text": text}
        for text, meta in zip(documents, metadatas, strict=True)
    ]


def stream_answer(question: str, sources: list[dict[str, object]]) -> Iterator[str]:
    context = "\n\n".join(
        f"[{n}] {s['source']}, passage {s['passage']}:\n{s['text']}"
        for n, s in enumerate(sources, start=1)
    )
    messages = [
        {
            "role": "system",
            "content": "Answer the question using only the numbered context passages. "
            "Cite the passages you use as [1], [2], ... If the context does not hold the "
            "answer, say so.",
        },
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
    ]
    body: dict[str, object] = {"messages": messages, "stream": True, "max_tokens": MAX_TOKENS}
    if MODEL_NAME:
        body["model"] = MODEL_NAME
    with httpx.stream(
        "POST",
        f"{MODEL_ENDPOINT}/v1/chat/completions",
        json=body,
        headers=bearer(MODEL_ENDPOINT_BEARER),
        timeout=TIMEOUT,
    ) as response:
        if response.status_code != 200:
            detail = response.read().decode("utf-8", errors="replace")[:300]
            raise ModelError(f"the model server answered HTTP {response.status_code}: {detail}")
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if event.get("error"):
                raise ModelError(f"the model server stopped: {event['error']}")
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece


def show_sources(sources: list[dict[str, object]]) -> None:
    st.markdown("**Sources**")
    for number, source in enumerate(sources, start=1):
        st.markdown(f"[{number}] `{source['source']}`, passage {source['passage']}")
        st.text(str(source["text"]))


st.set_page_config(page_title="RAG chatbot", page_icon="📚")
st.title("📚 RAG chatbot")
st.caption(
    f"Chat model: {MODEL_ENDPOINT} · embeddings: {EMBEDDING_ENDPOINT} · "
    f"Chroma: {VECTORDB_HOST}:{VECTORDB_PORT}/{VECTORDB_NAME}"
)

if "indexed" not in st.session_state:
    st.session_state.indexed = {}
    st.session_state.history = []

with st.sidebar:
    st.header("Documents")
    uploads = st.file_uploader(
        "Add .txt, .md or .pdf files", type=["txt", "md", "pdf"], accept_multiple_files=True
    )
    for upload in uploads or []:
        data = upload.getvalue()
        key = hashlib.sha256(data).hexdigest()
        if key in st.session_state.indexed:
            continue
        with st.spinner(f"Indexing {upload.name}…"):
            try:
                count = add_document(upload.name, data)
            except (ModelError, httpx.HTTPError, ValueError) as exc:
                st.error(f"{upload.name} was not indexed: {exc}")
                continue
        st.session_state.indexed[key] = (upload.name, count)
    for name, count in st.session_state.indexed.values():
        st.success(f"{name}: {count} passages indexed")

for turn in st.session_state.history:
    with st.chat_message("user"):
        st.markdown(turn["question"])
    with st.chat_message("assistant"):
        st.markdown(turn["answer"])
        show_sources(turn["sources"])

if question := st.chat_input("Ask about your documents"):
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        try:
            sources = retrieve(question)
            if not sources:
                st.warning("No document is indexed yet: add one in the sidebar.")
            else:
                answer = st.write_stream(stream_answer(question, sources))
                show_sources(sources)
                st.session_state.history.append(
                    {"question": question, "answer": str(answer), "sources": sources}
                )
        except (ModelError, httpx.HTTPError, ValueError) as exc:
            st.error(f"No answer: {exc}")
