"""Client code for a served model: curl, Python (openai), Python (httpx), JavaScript (fetch).

Every snippet streams a chat completion from the OpenAI-compatible endpoint, so what the user
copies shows tokens as they arrive, like the playground does. A service that requires a key
gets it in each snippet (the Authorization header, or the openai client's api_key).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["SNIPPET_LANGUAGES", "Snippet", "snippet", "snippets"]

SNIPPET_LANGUAGES: tuple[tuple[str, str], ...] = (
    ("curl", "curl"),
    ("python-openai", "Python (openai)"),
    ("python-httpx", "Python (httpx)"),
    ("javascript", "JavaScript (fetch)"),
)
"""(key, title) in the order the UI shows them."""

DEFAULT_PROMPT = "What is the capital of France?"


@dataclass(frozen=True)
class Snippet:
    key: str
    title: str
    language: str
    """For syntax highlighting: "bash", "python" or "javascript"."""
    code: str


def _base(api_url: str) -> str:
    """The /v1 base URL, whatever form the caller has (with or without /v1, trailing slash)."""
    url = api_url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def _curl(base: str, model: str, prompt: str, key: str | None) -> str:
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True},
        indent=2,
        ensure_ascii=False,
    )
    quoted = body.replace("'", "'\\''")
    auth = f"  -H 'Authorization: Bearer {key}' \\\n" if key else ""
    return (
        f"curl -N {base}/chat/completions \\\n"
        f"{auth}"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d '{quoted}'\n"
    )


def _python_openai(base: str, model: str, prompt: str, key: str | None) -> str:
    return f"""\
# pip install openai
from openai import OpenAI

client = OpenAI(base_url={base!r}, api_key={key or "not-needed"!r})
stream = client.chat.completions.create(
    model={model!r},
    messages=[{{"role": "user", "content": {prompt!r}}}],
    stream=True,
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
"""


def _python_httpx(base: str, model: str, prompt: str, key: str | None) -> str:
    headers = f"headers={{'Authorization': {'Bearer ' + key!r}}}, " if key else ""
    return f"""\
# pip install httpx
import json

import httpx

payload = {{
    "model": {model!r},
    "messages": [{{"role": "user", "content": {prompt!r}}}],
    "stream": True,
}}
url = {base + "/chat/completions"!r}
with httpx.stream("POST", url, {headers}json=payload, timeout=None) as response:
    response.raise_for_status()
    for line in response.iter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        delta = json.loads(line[6:])["choices"][0]["delta"]
        print(delta.get("content") or "", end="", flush=True)
print()
"""


def _javascript(base: str, model: str, prompt: str, key: str | None) -> str:
    url = json.dumps(base + "/chat/completions")
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True},
        ensure_ascii=False,
    )
    return f"""\
const response = await fetch({url}, {{
  method: "POST",
  headers: {json.dumps(headers)},
  body: JSON.stringify({body}),
}});
const reader = response.body.getReader();
const decoder = new TextDecoder();
let buffer = "";
for (;;) {{
  const {{ value, done }} = await reader.read();
  if (done) break;
  buffer += decoder.decode(value, {{ stream: true }});
  const lines = buffer.split("\\n");
  buffer = lines.pop();
  for (const line of lines) {{
    if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
    const delta = JSON.parse(line.slice(6)).choices[0].delta;
    if (delta.content) process.stdout.write(delta.content);
  }}
}}
"""


_BUILDERS = {
    "curl": ("bash", _curl),
    "python-openai": ("python", _python_openai),
    "python-httpx": ("python", _python_httpx),
    "javascript": ("javascript", _javascript),
}


def snippet(
    key: str,
    api_url: str,
    model: str,
    prompt: str = DEFAULT_PROMPT,
    api_key: str | None = None,
) -> Snippet:
    """One snippet; key is one of SNIPPET_LANGUAGES' keys; api_key the service's own key."""
    if key not in _BUILDERS:
        raise ValueError(f"unknown snippet {key!r}; expected one of {', '.join(_BUILDERS)}")
    language, build = _BUILDERS[key]
    title = dict(SNIPPET_LANGUAGES)[key]
    return Snippet(key, title, language, build(_base(api_url), model, prompt, api_key))


def snippets(
    api_url: str, model: str, prompt: str = DEFAULT_PROMPT, api_key: str | None = None
) -> list[Snippet]:
    """Every snippet, in SNIPPET_LANGUAGES order."""
    return [snippet(key, api_url, model, prompt, api_key) for key, _ in SNIPPET_LANGUAGES]
