"""Scorers: how an answer is compared with an item's reference, each giving 0..1.

Deterministic scorers (exact, contains, regex, numeric, json_schema) are pure functions of the
item and the answer, so scores can always be recomputed from stored answers. The judge asks a
model the user picks; its prompt templates are plain text the user can read and change, it asks
with both answer orders (a judge tends to prefer whichever answer it reads first), and a reply it
cannot read is recorded as "unparseable", never guessed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import jsonschema

from podlab.core.chat.client import ChatClient, Done, GenerationParams

if TYPE_CHECKING:
    from podlab.core.evaluate.promptset import PromptItem, Reference

SCORERS = ("exact", "contains", "regex", "numeric", "json_schema", "judge")
DETERMINISTIC = frozenset(SCORERS) - {"judge"}
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)

ScoreState = Literal["scored", "unparseable", "error"]


@dataclass(frozen=True)
class Score:
    """`value` is 0..1 (None when the answer could not be judged); `detail` says why."""

    value: float | None
    detail: str = ""
    state: ScoreState = "scored"

    @property
    def passed(self) -> bool:
        return self.value is not None and self.value >= 1.0


# ---------------------------------------------------------------------------------------------
# Checks at load time


def check_params(name: str, params: Mapping[str, Any], reference: Reference) -> str | None:
    """What the scorer `name` lacks to judge an item, or None; a set is refused before it runs."""
    references = _references(reference)
    if name in ("exact", "contains") and not references:
        return f"the '{name}' scorer needs a reference"
    if name == "regex":
        pattern = params.get("pattern", references[0] if references else None)
        if not isinstance(pattern, str):
            return "the 'regex' scorer needs a 'pattern' (or the reference as the pattern)"
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"the regex pattern does not compile: {exc}"
    if name == "numeric":
        if not references or _number(references[0]) is None:
            return "the 'numeric' scorer needs a number as its reference"
        for key in ("tolerance", "relative_tolerance"):
            value = params.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                return f"'{key}' must be a number of zero or more"
    if name == "json_schema":
        schema = params.get("schema")
        if not isinstance(schema, dict):
            return "the 'json_schema' scorer needs a 'schema' mapping in its params"
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            return f"the JSON Schema is not valid: {exc.message}"
    return None


# ---------------------------------------------------------------------------------------------
# Deterministic scorers


def score_answer(item: PromptItem, answer: str) -> Score:
    """Score `answer` with the item's deterministic scorer (the judge is `Judge.score`)."""
    name = item.scorer.name
    params = item.scorer.params
    references = _references(item.reference)
    if name == "exact":
        return _exact(answer, references, params)
    if name == "contains":
        return _contains(answer, references, params)
    if name == "regex":
        return _regex(answer, references, params)
    if name == "numeric":
        return _numeric(answer, references, params)
    if name == "json_schema":
        return _json_schema(answer, params)
    raise ValueError(f"'{name}' is not a deterministic scorer")


def _references(reference: Reference) -> list[str]:
    if reference is None:
        return []
    return [reference] if isinstance(reference, str) else list(reference)


def _normalize(text: str, case_sensitive: bool) -> str:
    """Whitespace collapsed, surrounding quotes and a final full stop dropped."""
    text = " ".join(text.split()).strip().strip("\"'`").rstrip(".").strip()
    return text if case_sensitive else text.casefold()


def _exact(answer: str, references: Sequence[str], params: Mapping[str, Any]) -> Score:
    case = bool(params.get("case_sensitive", False))
    got = _normalize(answer, case)
    for reference in references:
        if got == _normalize(reference, case):
            return Score(1.0, f"equals {reference!r}")
    return Score(0.0, f"expected {references[0]!r}" if len(references) == 1 else "no match")


def _contains(answer: str, references: Sequence[str], params: Mapping[str, Any]) -> Score:
    case = bool(params.get("case_sensitive", False))
    got = _normalize(answer, case)
    for reference in references:
        if _normalize(reference, case) in got:
            return Score(1.0, f"contains {reference!r}")
    return Score(0.0, "contains none of " + ", ".join(repr(r) for r in references))


def _regex(answer: str, references: Sequence[str], params: Mapping[str, Any]) -> Score:
    pattern = str(params.get("pattern", references[0] if references else ""))
    flags = 0 if params.get("case_sensitive", False) else re.IGNORECASE
    if params.get("fullmatch", False):
        matched = re.fullmatch(pattern, answer.strip(), flags | re.DOTALL)
    else:
        matched = re.search(pattern, answer, flags | re.MULTILINE)
    verb = "matches" if matched else "does not match"
    return Score(1.0 if matched else 0.0, f"{verb} /{pattern}/")


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _numeric(answer: str, references: Sequence[str], params: Mapping[str, Any]) -> Score:
    """The last number in the answer (small models often show their working first)."""
    expected = _number(references[0])
    found = _NUMBER.findall(answer)
    if expected is None:
        return Score(None, "the reference is not a number", "error")
    if not found:
        return Score(0.0, "no number in the answer")
    got = _number(found[-1])
    if got is None:
        return Score(0.0, f"{found[-1]!r} is not a number")
    tolerance = float(params.get("tolerance", 0))
    relative = float(params.get("relative_tolerance", 0))
    allowed = max(tolerance, relative * abs(expected))
    ok = math.isclose(got, expected, rel_tol=0.0, abs_tol=allowed + 1e-12)
    return Score(1.0 if ok else 0.0, f"{got:g} vs {expected:g} (±{allowed:g})")


def extract_json(answer: str) -> Any:
    """The JSON value in an answer: the whole text, a ``` fenced block, or the outermost {...}
    or [...]; raises ValueError when there is none."""
    candidates = [answer.strip()]
    candidates += [block.strip() for block in _FENCE.findall(answer)]
    for opening, closing in ("{}", "[]"):
        start, end = answer.find(opening), answer.rfind(closing)
        if 0 <= start < end:
            candidates.append(answer[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ValueError("no JSON value in the answer")


def _json_schema(answer: str, params: Mapping[str, Any]) -> Score:
    try:
        value = extract_json(answer)
    except ValueError as exc:
        return Score(0.0, str(exc))
    schema = params["schema"]
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "the value"
        return Score(0.0, f"{where}: {error.message}")
    return Score(1.0, "valid against the schema")


# ---------------------------------------------------------------------------------------------
# LLM judge

PAIRWISE_TEMPLATE = """\
You compare two answers to the same question for correctness.

Question:
{question}

Answer A:
{first}

Answer B:
{second}

Which answer is correct? If both are equally correct, or equally wrong, say TIE.
Reply with exactly one word: A, B or TIE."""

SINGLE_TEMPLATE = """\
You check whether an answer to a question is correct and follows the question's instructions.

Question:
{question}

Answer:
{answer}

Reply with exactly one word: PASS or FAIL."""

_VERDICT_WORD = re.compile(r"(TIE|PASS|FAIL|A|B)\b[\s.!*\"')]*(?:\n|$)")
_VERDICT_PHRASE = re.compile(
    r"\b(?:THE ANSWER IS|VERDICT IS|VERDICT:|ANSWER:)\s*\**[\"']?(TIE|PASS|FAIL|A|B)\b"
)


def parse_verdict(text: str, allowed: Sequence[str]) -> str | None:
    """The verdict word of a judge's reply, or None. The reply must say "the answer is X" /
    "verdict: X", or be the word alone on its first line (after quotes, stars or a label), so
    a sentence that merely starts with "A" is never misread as a verdict."""
    cleaned = text.strip().lstrip("*\"'`# ").upper()
    cleaned = re.sub(r"^(VERDICT|ANSWER|FINAL ANSWER)\s*[:\-]\s*\**", "", cleaned)
    matched = _VERDICT_PHRASE.search(cleaned) or _VERDICT_WORD.match(cleaned)
    if matched and matched.group(1) in allowed:
        return matched.group(1)
    return None


@dataclass
class JudgeConfig:
    """The judge model's endpoint and its editable prompts (stored with the run)."""

    endpoint: str
    model: str | None = None
    pairwise_template: str = PAIRWISE_TEMPLATE
    single_template: str = SINGLE_TEMPLATE
    max_tokens: int = 16
    seed: int = 0
    api_key: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the API key."""
        return {
            "endpoint": self.endpoint,
            "model": self.model,
            "pairwise_template": self.pairwise_template,
            "single_template": self.single_template,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeConfig:
        return cls(
            endpoint=str(data["endpoint"]),
            model=data.get("model"),
            pairwise_template=str(data.get("pairwise_template") or PAIRWISE_TEMPLATE),
            single_template=str(data.get("single_template") or SINGLE_TEMPLATE),
            max_tokens=int(data.get("max_tokens") or 16),
            seed=int(data.get("seed") or 0),
        )


class Judge:
    """Scores answers by asking a model; with a reference, the answer and the reference are
    compared twice, once in each order, and the answer passes an order when it wins or ties."""

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self._client = ChatClient(config.endpoint, config.api_key)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _ask(self, prompt: str) -> str:
        params = GenerationParams(
            temperature=0.0, seed=self.config.seed, max_tokens=self.config.max_tokens
        )
        messages = [{"role": "user", "content": prompt}]
        done: Done | None = None
        async for event in self._client.stream_chat(messages, self.config.model, params):
            if isinstance(event, Done):
                done = event
        if done is None or done.error is not None:
            raise JudgeError(done.error if done and done.error else "the judge gave no answer")
        return done.text

    async def score(self, item: PromptItem, answer: str) -> Score:
        try:
            references = _references(item.reference)
            if not references:
                return await self._single(item, answer)
            return await self._pairwise(item, answer, references[0])
        except JudgeError as exc:
            return Score(None, f"judge failed: {exc}", "error")

    async def _single(self, item: PromptItem, answer: str) -> Score:
        prompt = self.config.single_template.format(question=item.prompt, answer=answer)
        reply = await self._ask(prompt)
        verdict = parse_verdict(reply, ("PASS", "FAIL"))
        if verdict is None:
            return Score(None, f"unparseable verdict: {reply[:200]!r}", "unparseable")
        return Score(1.0 if verdict == "PASS" else 0.0, f"judge: {verdict}")

    async def _pairwise(self, item: PromptItem, answer: str, reference: str) -> Score:
        template = self.config.pairwise_template
        replies = [
            await self._ask(template.format(question=item.prompt, first=answer, second=reference)),
            await self._ask(template.format(question=item.prompt, first=reference, second=answer)),
        ]
        verdicts = [parse_verdict(reply, ("A", "B", "TIE")) for reply in replies]
        if None in verdicts:
            shown = "; ".join(f"order {n}: {r[:120]!r}" for n, r in enumerate(replies, start=1))
            return Score(None, f"unparseable verdict ({shown})", "unparseable")
        answer_label = ("A", "B")
        wins = [verdict in ("TIE", answer_label[order]) for order, verdict in enumerate(verdicts)]
        detail = f"answer first: {verdicts[0]}, reference first: {verdicts[1]}"
        return Score(sum(wins) / 2.0, detail)


class JudgeError(Exception):
    """The judge's endpoint failed (not the same as a reply that cannot be read)."""
