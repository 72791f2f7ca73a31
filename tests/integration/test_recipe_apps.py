"""The three recipe apps, run from their pinned requirements against real servers and driven in
headless Chromium the way a user drives them.

Each app runs as a process on 127.0.0.1 (as its container runs it, without Podman for now)
against real llama-cpp-python servers with SmolLM2 (and all-MiniLM for embeddings) and a real
Chroma server.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import harness, recipe_harness
from tests.recipe_harness import RECIPES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CHROMA_REQUIREMENTS = RECIPES / "vector_dbs" / "chromadb" / "requirements.txt"


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout:.0f} s; app log:\n{log()[-3000:]}")


def pinned(requirements: Path, package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)$", requirements.read_text(), re.MULTILINE)
    assert match, f"{package} is not pinned in {requirements}"
    return match.group(1)


@pytest.fixture(scope="module")
def streamlit_venv() -> Path:
    return recipe_harness.recipe_venv(RECIPES / "chatbot" / "app" / "requirements.txt")


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with recipe_harness.chromium_page() as browser_page:
        yield browser_page


def send_chat(page: Any, text: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.wait_for(timeout=60_000)
    box.fill(text)
    box.press("Enter")


def ask_chatbot(page: Any, question: str, log: Callable[[], str]) -> tuple[Any, set[str]]:
    """Send a question in the chatbot page and wait for the answer and its speed line; returns
    the answer's element and every text it showed while it streamed in."""
    send_chat(page, question)
    answer = page.get_by_test_id("stChatMessage").nth(1)
    seen: set[str] = set()

    def finished() -> bool:
        if page.get_by_test_id("stChatMessage").count() < 2:
            return False
        text = answer.inner_text()
        body = text.split("tokens/s")[0].strip()
        if len(body) > len("smart_toy"):
            seen.add(body)
        return "tokens/s" in text

    wait_until(finished, 300, "no answer with its speed", log)
    return answer, seen


def test_every_requirement_is_pinned() -> None:
    files = [*RECIPES.glob("*/app/requirements.txt"), CHROMA_REQUIREMENTS]
    assert len(files) == 4
    for path in files:
        lines = [
            line.strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert lines, path
        unpinned = [line for line in lines if not re.fullmatch(r"[A-Za-z0-9_.\-]+==[^=\s]+", line)]
        assert unpinned == [], f"{path}: {unpinned}"


def test_chatbot_streams_an_answer_with_its_speed(
    streamlit_venv: Path,
    smollm2_server: harness.LlamaServer,
    page: Any,
    tmp_path: Path,
) -> None:
    app_dir = RECIPES / "chatbot" / "app"
    env = {"MODEL_ENDPOINT": smollm2_server.base_url, "MAX_TOKENS": "48"}
    with recipe_harness.streamlit_app(
        streamlit_venv, app_dir, "chatbot_ui.py", env, tmp_path
    ) as app:
        page.goto(app.url)
        answer, seen = ask_chatbot(
            page, "What is the capital of France? Answer in one word.", app.log
        )
        final = answer.inner_text()
        assert re.search(r"\d+ tokens · [\d.]+ tokens/s · first token after \d+ ms", final), final
        # Streamed in: the page showed the answer at more than one length before it ended.
        assert len(seen) >= 2, seen
        # The history keeps the question and the answer; a second question adds two messages.
        send_chat(page, "And of Italy?")
        wait_until(
            lambda: (
                page.get_by_test_id("stChatMessage").count() >= 4
                and "tokens/s" in page.get_by_test_id("stChatMessage").nth(3).inner_text()
            ),
            300,
            "no second answer",
            app.log,
        )
        assert "capital of France" in page.get_by_test_id("stChatMessage").nth(0).inner_text()
        assert_cross_site_protections_on(app.url)


def assert_cross_site_protections_on(url: str) -> None:
    """Streamlit's own protections, kept on by the app's .streamlit/config.toml."""
    upload = f"{url}/_stcore/upload_file/some-session/some-file"
    # XSRF: an upload without the token from the page's cookie is refused.
    refused = httpx.put(upload, files={"file": ("a.txt", b"x")}, timeout=10)
    assert refused.status_code == 403
    # CORS: another site's page gets no grant to call the app.
    preflight = httpx.options(
        upload,
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"},
        timeout=10,
    )
    assert preflight.headers.get("access-control-allow-origin") not in ("*", "http://evil.example")


@pytest.fixture(scope="module")
def embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.LlamaServer]:
    model = recipe_harness.embedding_model()
    with harness.llama_server(
        model, tmp_path_factory.mktemp("embedding"), n_ctx=512, extra_args=("--embedding", "true")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def chroma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[recipe_harness.ServerProcess]:
    venv = recipe_harness.recipe_venv(CHROMA_REQUIREMENTS)
    with recipe_harness.chroma_server(venv, tmp_path_factory.mktemp("chroma")) as server:
        yield server


ROUND_TRIP = """
import sys, chromadb
client = chromadb.HttpClient(host="127.0.0.1", port=int(sys.argv[1]))
collection = client.get_or_create_collection("version-check", embedding_function=None)
collection.upsert(ids=["a", "b"], documents=["near", "far"], embeddings=[[1, 0], [0, 1]])
found = collection.query(query_embeddings=[[0.9, 0.1]], n_results=1)
print(found["documents"][0][0])
"""


def installed(venv: Path, distribution: str) -> str:
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.metadata as m; print(m.version({distribution!r}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_chroma_client_and_server_are_one_version(
    chroma: recipe_harness.ServerProcess,
) -> None:
    rag_requirements = RECIPES / "rag" / "app" / "requirements.txt"
    client_version = pinned(rag_requirements, "chromadb-client")
    assert client_version == pinned(CHROMA_REQUIREMENTS, "chromadb")
    client_venv = recipe_harness.recipe_venv(rag_requirements)
    server_venv = recipe_harness.recipe_venv(CHROMA_REQUIREMENTS)
    assert installed(client_venv, "chromadb-client") == client_version
    assert installed(server_venv, "chromadb") == client_version
    # And they work together: the app's client stores our vectors in the server and finds them.
    port = chroma.url.rsplit(":", 1)[1]
    done = subprocess.run(
        [str(client_venv / "bin" / "python"), "-c", ROUND_TRIP, port],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "near"


FACT = "The access code of the Zephyr-42 greenhouse is MAGENTA-OTTER-7781."
FILLER = [
    "Bees communicate the direction of flowers through a waggle dance inside the hive.",
    "The Danube flows through ten countries before it reaches the Black Sea.",
    "Sourdough bread rises because wild yeast and lactic acid bacteria ferment the dough.",
    "A leap year adds one day to February to keep the calendar aligned with the seasons.",
    "Copper turns green over time because it reacts with air and water to form a patina.",
    "The violin has four strings tuned in perfect fifths: G, D, A and E.",
    "Glaciers move slowly downhill under their own weight, carving valleys as they go.",
    "Chess players use opening theory to reach good positions in the first moves.",
    "Tides are caused mainly by the gravitational pull of the Moon on the oceans.",
    "Origami is the art of folding paper into shapes without cutting or gluing it.",
    "The first successful powered aeroplane flight took place in 1903 in North Carolina.",
]


def pdf_with_lines(lines: list[str]) -> bytes:
    """A real one-page PDF whose text is these lines (Helvetica, one line each)."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    shown = " ".join(f"({escape(line)}) Tj T*" for line in lines)
    content = f"BT /F1 10 Tf 14 TL 40 800 Td {shown} ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    ).encode()
    return out


def test_rag_answers_from_uploaded_documents_and_cites_them(
    smollm2_server: harness.LlamaServer,
    embedding_server: harness.LlamaServer,
    chroma: recipe_harness.ServerProcess,
    page: Any,
    tmp_path: Path,
) -> None:
    venv = recipe_harness.recipe_venv(RECIPES / "rag" / "app" / "requirements.txt")
    # The fact sits in a PDF among unrelated sentences, next to a Markdown file of others: more
    # passages than the app retrieves, so retrieval must find it.
    notes = tmp_path / "general-notes.md"
    notes.write_text("# Notes\n\n" + "\n\n".join(FILLER[:6]) + "\n")
    greenhouse = tmp_path / "greenhouse-notes.pdf"
    greenhouse.write_bytes(pdf_with_lines([*FILLER[6:9], FACT, *FILLER[9:]]))
    port = chroma.url.rsplit(":", 1)[1]
    env = {
        "MODEL_ENDPOINT": smollm2_server.base_url,
        "EMBEDDING_ENDPOINT": embedding_server.base_url,
        "VECTORDB_HOST": "127.0.0.1",
        "VECTORDB_PORT": port,
        "VECTORDB_NAME": f"test-{tmp_path.name}"[:60],
        "CHUNK_SIZE": "120",
        "TOP_K": "2",
        "MAX_TOKENS": "64",
    }
    with recipe_harness.streamlit_app(
        venv, RECIPES / "rag" / "app", "rag_ui.py", env, tmp_path
    ) as app:
        page.goto(app.url)
        upload = page.locator("input[type=file]")
        upload.wait_for(state="attached", timeout=60_000)
        upload.set_input_files([str(notes), str(greenhouse)])
        counts = {}
        for name in (notes.name, greenhouse.name):
            indexed = page.get_by_text(re.compile(rf"{re.escape(name)}: \d+ passages indexed"))
            indexed.wait_for(timeout=180_000)
            counts[name] = int(indexed.inner_text().split(": ")[1].split()[0])
        assert counts[greenhouse.name] > 2 and counts[notes.name] > 2, counts
        send_chat(page, "What is the access code of the Zephyr-42 greenhouse?")
        wait_until(
            lambda: (
                page.get_by_test_id("stChatMessage").count() >= 2
                and "Sources" in page.get_by_test_id("stChatMessage").nth(1).inner_text()
            ),
            300,
            "no answer with sources",
            app.log,
        )
        answer = page.get_by_test_id("stChatMessage").nth(1).inner_text()
        assert "MAGENTA-OTTER-7781" in answer, answer
        assert re.search(r"greenhouse-notes\.pdf.{0,5}, passage \d+", answer), answer


def long_text(paragraphs: int) -> str:
    """Distinct paragraphs, so no two chunks are alike."""
    topics = ["river", "mountain", "library", "harbour", "orchard", "observatory", "market"]
    out = []
    for number in range(paragraphs):
        topic = topics[number % len(topics)]
        out.append(
            f"Part {number + 1}. The {topic} of the town of Alder changed during year "
            f"{1900 + number}. Its keepers recorded {number * 7 + 3} visitors, repaired "
            f"{number % 5 + 1} buildings and wrote a report about the {topic} and its people. "
            "The report describes the weather, the work done each season, the money spent, and "
            "the plans the council made for the next year, with many small details."
        )
    return "\n\n".join(out)


SUMMARIZER_CONTEXT = 512  # small, so a text several times the context stays quick to process


@pytest.fixture(scope="module")
def small_context_server(
    smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.LlamaServer]:
    with harness.llama_server(
        smollm2_model, tmp_path_factory.mktemp("llama-small"), n_ctx=SUMMARIZER_CONTEXT
    ) as server:
        yield server


def test_summarizer_handles_a_text_several_times_the_context(
    streamlit_venv: Path,
    small_context_server: harness.LlamaServer,
    page: Any,
    tmp_path: Path,
) -> None:
    context = SUMMARIZER_CONTEXT
    text = long_text(22)
    tokens = httpx.post(
        f"{small_context_server.base_url}/extras/tokenize", json={"input": text}, timeout=60
    ).json()["tokens"]
    assert len(tokens) > 3 * context
    document = tmp_path / "alder-history.txt"
    document.write_text(text)
    env = {
        "MODEL_ENDPOINT": small_context_server.base_url,
        "CONTEXT_SIZE": str(context),
        "SUMMARY_TOKENS": "32",
    }
    with recipe_harness.streamlit_app(
        streamlit_venv, RECIPES / "summarizer" / "app", "summarizer_ui.py", env, tmp_path
    ) as app:
        page.goto(app.url)
        upload = page.locator("input[type=file]")
        upload.wait_for(state="attached", timeout=60_000)
        upload.set_input_files(str(document))
        page.get_by_text("alder-history.txt").wait_for(timeout=30_000)
        page.get_by_role("button", name="Summarize").click()
        planned = page.get_by_text(re.compile(r"\d+ characters in \d+ chunks"))
        planned.wait_for(timeout=120_000)
        chunks = int(re.search(r"in (\d+) chunks", planned.inner_text()).group(1))  # type: ignore[union-attr]
        assert chunks >= len(tokens) // context
        summary_box = page.locator(".st-key-summary")
        failed = page.get_by_text("No summary")
        wait_until(
            lambda: summary_box.count() > 0 or failed.count() > 0, 600, "no summary", app.log
        )
        body = page.locator("body").inner_text()
        assert failed.count() == 0, body
        for number in range(1, chunks + 1):
            assert f"Chunk {number} of {chunks} processed." in body
        summary = summary_box.inner_text()
        assert summary.strip()
        assert len(summary) < len(text) / 4
