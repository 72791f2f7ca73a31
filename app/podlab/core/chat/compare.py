"""Side-by-side comparison: one prompt to 2-4 panes, each with its own server, model, parameters
and independent history; blind votes feed a local Elo leaderboard.

    comparison = Comparison([Pane("http://127.0.0.1:8080", "a"), Pane("http://h:8000", "b")])
    async for event in comparison.run("Why is the sky blue?", mode="per-server"):
        match event:
            case PaneStarted(pane=i): ...            # pane i sent its request
            case PaneEvent(pane=i, event=Token(text=t)): ...
            case PaneEvent(pane=i, event=Done() as done): ...
            case RoundDone(result=result): ...       # always last: texts, metrics, fastest

Modes: "parallel" (every pane at once), "per-server" (panes on the same server take turns,
different servers run at the same time: a local server often serves one request at a time),
"sequential" (one pane after another). A failing pane never stops the others: its error is in
its result. Closing the iterator cancels every pane and closes their connections.

Blind mode shuffles the display order each round (`order[slot] == pane index`), hides names
(`display_name`) until `vote()`, and starts every round from empty histories: an earlier round,
maybe seen with names, would tell who is who.

Each pane is shown and rated under a name that tells it apart (`pane_names`): its label or
model, plus the parameters that differ between the panes ("SmolLM2 · T=0.2"), the endpoint when
that is all that differs. "Fastest" is the shortest time to the complete answer, counted from
when the server took the request: time spent waiting for another pane on the same server (in
turn-taking modes, or queued inside one server) is reported, not counted.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from podlab.core.chat.client import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    ChatClient,
    ChatEvent,
    Done,
    Error,
    ErrorKind,
    GenerationParams,
    Metrics,
    server_key,
)
from podlab.core.chat.conversations import ConversationStore, VoteRecord
from podlab.core.chat.energy import EnergyMeter, Measurement, tokens_per_joule
from podlab.core.errors import PodlabError
from podlab.core.text import plural, readable_time

__all__ = [
    "ELO_INITIAL",
    "ELO_K",
    "MAX_PANES",
    "MIN_PANES",
    "MODES",
    "CompareEvent",
    "Comparison",
    "EloRating",
    "Pane",
    "PaneEvent",
    "PaneResult",
    "PaneStarted",
    "PromptSetResult",
    "RoundDone",
    "RoundResult",
    "apply_vote",
    "compute_leaderboard",
    "elo_update",
    "expected_score",
    "load_prompts",
    "pane_names",
]

Mode = Literal["parallel", "per-server", "sequential"]
MODES: tuple[Mode, ...] = ("parallel", "per-server", "sequential")
ELO_K = 32.0
ELO_INITIAL = 1000.0
MIN_PANES, MAX_PANES = 2, 4


# ---------------------------------------------------------------------------------------------
# Elo


def expected_score(rating_a: float, rating_b: float) -> float:
    """The chance that A beats B."""
    return 1.0 / (1.0 + float(10.0 ** ((rating_b - rating_a) / 400.0)))


def elo_update(
    rating_a: float, rating_b: float, score_a: float, k: float = ELO_K
) -> tuple[float, float]:
    """New ratings after one game; `score_a` is 1 (A won), 0.5 (tie) or 0 (B won)."""
    change = k * (score_a - expected_score(rating_a, rating_b))
    return rating_a + change, rating_b - change


@dataclass
class EloRating:
    name: str
    rating: float = ELO_INITIAL
    games: int = 0
    wins: int = 0
    losses: int = 0
    ties: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rating": round(self.rating, 1),
            "games": self.games,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
        }


def apply_vote(
    ratings: dict[str, EloRating],
    players: Sequence[str],
    winner: int | None,
    k: float = ELO_K,
    initial: float = ELO_INITIAL,
) -> None:
    """Update `ratings` in place for one vote.

    With a winner, the winner beats each other pane (one game each, all computed from the
    ratings before the vote); the other panes do not play each other. `None` is a tie between
    every pair. A name that appears twice (the same model in two panes) plays nobody.
    """
    for name in players:
        ratings.setdefault(name, EloRating(name, initial))
    before = {name: ratings[name].rating for name in players}
    pairs: list[tuple[int, int, float]] = []
    if winner is None:
        pairs = [(i, j, 0.5) for i in range(len(players)) for j in range(i + 1, len(players))]
    else:
        pairs = [(winner, j, 1.0) for j in range(len(players)) if j != winner]
    deltas: dict[str, float] = {}
    for i, j, score in pairs:
        a, b = players[i], players[j]
        if a == b:
            continue
        new_a, _new_b = elo_update(before[a], before[b], score, k)
        change = new_a - before[a]
        deltas[a] = deltas.get(a, 0.0) + change
        deltas[b] = deltas.get(b, 0.0) - change
        for name, result in ((a, score), (b, 1.0 - score)):
            entry = ratings[name]
            entry.games += 1
            if result == 1.0:
                entry.wins += 1
            elif result == 0.0:
                entry.losses += 1
            else:
                entry.ties += 1
    for name, change in deltas.items():
        ratings[name].rating += change


def compute_leaderboard(
    votes: Sequence[VoteRecord], k: float = ELO_K, initial: float = ELO_INITIAL
) -> list[EloRating]:
    """Replay every vote in order; best first. Deleting a vote and replaying stays exact."""
    ratings: dict[str, EloRating] = {}
    for vote in votes:
        apply_vote(ratings, vote.players, vote.winner, k, initial)
    return sorted(ratings.values(), key=lambda r: (-r.rating, r.name))


# ---------------------------------------------------------------------------------------------
# Panes, events, results


@dataclass
class Pane:
    """One side of a comparison. `history` is this pane's own conversation (OpenAI messages)."""

    endpoint: str
    model: str | None = None
    params: GenerationParams = field(default_factory=GenerationParams)
    system_prompt: str = ""
    label: str = ""
    api_key: str | None = field(default=None, repr=False)
    history: list[dict[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The name shown and rated: the label, else the model, else the endpoint."""
        return self.label or self.model or self.endpoint

    def messages_for(self, prompt: str) -> list[dict[str, str]]:
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.extend(self.history)
        messages.append({"role": "user", "content": prompt})
        return messages

    def describe(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "model": self.model,
            "label": self.name,
            "params": self.params.to_dict(),
            "system_prompt": self.system_prompt,
        }


_PARAM_SHORT = {
    "temperature": "T",
    "top_p": "top-p",
    "top_k": "top-k",
    "min_p": "min-p",
    "max_tokens": "max tokens",
    "repeat_penalty": "repeat",
    "presence_penalty": "presence",
    "frequency_penalty": "frequency",
    "n_ctx": "context",
}


def _differences(panes: Sequence[Pane]) -> list[list[str]]:
    """Per pane, the settings it sets that are not the same in every pane ("T=0.2")."""
    settings = []
    for pane in panes:
        flat = {key: repr(value) for key, value in pane.params.to_dict().items()}
        if pane.system_prompt:
            flat["system"] = pane.system_prompt
        settings.append(flat)
    keys = sorted({key for flat in settings for key in flat})
    differing = [k for k in keys if len({flat.get(k) for flat in settings}) > 1]
    parts: list[list[str]] = []
    for pane, flat in zip(panes, settings, strict=True):
        shown = []
        for key in differing:
            if key == "system":
                shown.append(f"system “{_one_line(pane.system_prompt, 16)}”" if key in flat else "")
                continue
            value = pane.params.to_dict().get(key)
            name = _PARAM_SHORT.get(key, key)
            if value is None:  # the server's default: the panes that set it say so
                continue
            if isinstance(value, float):
                shown.append(f"{name}={value:g}")
            else:
                shown.append(f"{name}={value}")
        parts.append([part for part in shown if part])
    return parts


def _host(endpoint: str) -> str:
    try:
        return urlsplit(endpoint).netloc or endpoint
    except ValueError:
        return endpoint


def pane_names(panes: Sequence[Pane]) -> list[str]:
    """A name per pane that tells it apart from the others; no two are the same.

    The label the user gave is kept as it is when no other pane has it. Otherwise the model
    (or the label) is followed by the settings that differ between the panes, then by the
    endpoint when that is all that differs, and as a last resort by the pane's number.
    """
    names = [pane.label or pane.model or _host(pane.endpoint) for pane in panes]
    differences = _differences(panes)
    for index, pane in enumerate(panes):
        if not pane.label and differences[index]:
            names[index] = " · ".join([names[index], *differences[index]])
    counts = Counter(names)
    for index, pane in enumerate(panes):
        if counts[names[index]] > 1 and pane.label and differences[index]:
            names[index] = " · ".join([names[index], *differences[index]])
    counts = Counter(names)
    hosts = Counter(server_key_or_text(pane.endpoint) for pane in panes)
    for index, pane in enumerate(panes):
        if counts[names[index]] > 1 and hosts[server_key_or_text(pane.endpoint)] == 1:
            names[index] = f"{names[index]} @ {_host(pane.endpoint)}"
    counts = Counter(names)
    for index in range(len(panes)):
        if counts[names[index]] > 1:
            names[index] = f"{names[index]} ({index + 1})"
    return names


def server_key_or_text(endpoint: str) -> str:
    """The server a pane talks to, or its endpoint text when that is not a valid URL."""
    try:
        return server_key(endpoint)
    except PodlabError:
        return endpoint


@dataclass(frozen=True)
class PaneStarted:
    """Pane `pane` sent its request, `at` seconds after the round started."""

    pane: int
    at: float


@dataclass(frozen=True)
class PaneEvent:
    """A chat event of pane `pane` (Token, Reasoning, Usage, Timings, Error, Done)."""

    pane: int
    event: ChatEvent


@dataclass
class PaneResult:
    pane: int
    endpoint: str
    model: str | None
    label: str
    text: str = ""
    metrics: Metrics | None = None
    error: str | None = None
    interrupted: bool = False
    finish_reason: str | None = None
    started_s: float | None = None  # seconds after the round started: its request was sent
    finished_s: float | None = None
    fastest: bool = False
    energy_j: float | None = None
    waited_for: int | None = None
    """The pane this one waited for on the same server (its turn, or the server's queue)."""
    waited_s: float = 0.0
    """How long it waited for `waited_for`: not counted in `answer_s`."""
    queued_s: float = 0.0
    """The part of `waited_s` after its request was sent (queued inside the server)."""

    @property
    def answer_s(self) -> float | None:
        """Seconds to the complete answer once the server took the request (what the user
        waited for this answer, less any wait for another pane)."""
        if self.started_s is None or self.finished_s is None:
            return None
        return max(0.0, self.finished_s - self.started_s - self.queued_s)

    @property
    def state(self) -> str:
        if self.started_s is None:
            return "queued"
        if self.finished_s is None:
            return "running"
        if self.interrupted:
            return "interrupted"
        return "error" if self.error is not None else "complete"

    @property
    def ok(self) -> bool:
        return self.state == "complete"

    @property
    def tokens_per_j(self) -> float | None:
        """Tokens per joule of this answer (when its energy could be told apart)."""
        return tokens_per_joule(
            None if self.metrics is None else self.metrics.tokens, self.energy_j
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "pane": self.pane,
            "endpoint": self.endpoint,
            "model": self.model,
            "label": self.label,
            "text": self.text,
            "state": self.state,
            "error": self.error,
            "finish_reason": self.finish_reason,
            "fastest": self.fastest,
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "started_s": _round(self.started_s),
            "finished_s": _round(self.finished_s),
            "answer_s": _round(self.answer_s),
            "waited_for": self.waited_for,
            "waited_s": _round(self.waited_s),
            "energy_j": _round(self.energy_j),
            "tokens_per_j": _round(self.tokens_per_j),
        }


@dataclass
class RoundResult:
    prompt: str
    mode: str
    blind: bool
    panes: list[PaneResult]
    started: float  # wall clock (time.time())
    total_s: float = 0.0
    fastest: int | None = None  # pane index with the shortest `answer_s` among complete answers
    energy_j: float | None = None
    comparison_id: int | None = None  # row id in the store, when saved
    vote: int | None = None
    voted: bool = False

    @property
    def tokens_per_j(self) -> float | None:
        """Tokens of every pane per joule of the whole round (also when panes ran together)."""
        tokens = sum(p.metrics.tokens for p in self.panes if p.metrics is not None)
        return tokens_per_joule(tokens, self.energy_j)

    def waits(self, name: Callable[[int], str] | None = None) -> list[str]:
        """One line per pane that waited for another ("pane 2 waited 1.9 s for pane 1 on the
        same server"); `name` names a pane by its index (blind rounds hide the numbers)."""
        name = name or (lambda index: f"pane {index + 1}")
        lines = []
        for pane in self.panes:
            if pane.waited_for is None or pane.waited_s < 0.05:
                continue
            other = self.panes[pane.waited_for]
            same = server_key_or_text(pane.endpoint) == server_key_or_text(other.endpoint)
            lines.append(
                f"{name(pane.pane)} waited {pane.waited_s:.1f} s for {name(other.pane)}"
                + (" on the same server" if same else " (one after another)")
            )
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "mode": self.mode,
            "blind": self.blind,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "total_s": _round(self.total_s),
            "fastest": self.fastest,
            "energy_j": _round(self.energy_j),
            "tokens_per_j": _round(self.tokens_per_j),
            "panes": [p.to_dict() for p in self.panes],
        }

    def to_markdown(self, *, heading: str = "Comparison") -> str:
        lines = [f"# {heading}", "", f"**Prompt:** {self.prompt}", ""]
        lines.append(f"_mode {self.mode}, {readable_time(self.started)}, {self.total_s:.2f} s_")
        lines += ["", *_metrics_table(self.panes), ""]
        for pane in self.panes:
            star = " (fastest)" if pane.fastest else ""
            lines += [f"## {pane.pane + 1}. {pane.label}{star}", ""]
            lines.append(f"_{pane.endpoint}, model {pane.model or '(server default)'}_")
            lines += ["", pane.text or "_(no text)_", ""]
            if pane.error:
                lines += [f"> error: {pane.error}", ""]
        return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class RoundDone:
    """The last event of `run()`: the round's results."""

    result: RoundResult


CompareEvent = PaneStarted | PaneEvent | RoundDone


@dataclass
class PromptSetResult:
    """A prompt set run over the panes: one round per prompt."""

    panes: list[dict[str, Any]]
    mode: str
    rounds: list[RoundResult] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        """One row per prompt and pane: prompt, pane, label, state, the metrics."""
        rows = []
        for index, result in enumerate(self.rounds):
            for pane in result.panes:
                metrics = pane.metrics
                rows.append(
                    {
                        "prompt_index": index,
                        "prompt": result.prompt,
                        "pane": pane.pane,
                        "label": pane.label,
                        "state": pane.state,
                        "ttft_ms": None if metrics is None else metrics.ttft_ms,
                        "tokens": None if metrics is None else metrics.tokens,
                        "tokens_per_s": None if metrics is None else metrics.tokens_per_s,
                        "total_ms": None if metrics is None else metrics.total_ms,
                        "fastest": pane.fastest,
                        "error": pane.error,
                    }
                )
        return rows

    def summary(self) -> list[dict[str, Any]]:
        """Per pane: answers complete, mean tokens/s and TTFT, times fastest."""
        out = []
        for index, pane in enumerate(self.panes):
            results = [r.panes[index] for r in self.rounds]
            done = [p for p in results if p.ok and p.metrics is not None]
            rates = [p.metrics.tokens_per_s for p in done if p.metrics and p.metrics.tokens_per_s]
            ttfts = [p.metrics.ttft_ms for p in done if p.metrics and p.metrics.ttft_ms]
            out.append(
                {
                    **pane,
                    "complete": len(done),
                    "failed": len(results) - len(done),
                    "mean_tokens_per_s": _round(sum(rates) / len(rates)) if rates else None,
                    "mean_ttft_ms": _round(sum(ttfts) / len(ttfts)) if ttfts else None,
                    "fastest": sum(1 for p in results if p.fastest),
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "panes": self.summary(),
            "rounds": [r.to_dict() for r in self.rounds],
        }

    def to_markdown(self) -> str:
        lines = [
            "# Prompt set",
            "",
            f"_{plural(len(self.rounds), 'prompt')}, mode {self.mode}_",
            "",
        ]
        headers = ["Pane", "Complete", "Failed", "Mean tokens/s", "Mean TTFT ms", "Fastest"]
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for row in self.summary():
            cells = [
                row["label"],
                row["complete"],
                row["failed"],
                row["mean_tokens_per_s"],
                row["mean_ttft_ms"],
                row["fastest"],
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        for index, result in enumerate(self.rounds):
            lines += ["", f"## {index + 1}. {_one_line(result.prompt)}", ""]
            lines += _metrics_table(result.panes)
            for pane in result.panes:
                lines += ["", f"### {pane.label}", "", pane.text or "_(no text)_"]
                if pane.error:
                    lines += ["", f"> error: {pane.error}"]
        return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# The comparison


class Comparison:
    """2-4 panes run against one prompt at a time. Not thread-safe; one round at a time."""

    def __init__(
        self,
        panes: Sequence[Pane],
        *,
        store: ConversationStore | None = None,
        blind: bool = False,
        rng: random.Random | None = None,
        energy: EnergyMeter | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        if not MIN_PANES <= len(panes) <= MAX_PANES:
            raise PodlabError(
                f"a comparison needs {MIN_PANES} to {MAX_PANES} panes, not {len(panes)}"
            )
        self.panes = list(panes)
        self.store = store
        self.blind = blind
        self.rng = rng or random.Random()
        self.energy = energy
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.order = list(range(len(self.panes)))  # display slot → pane index
        self.names = pane_names(self.panes)
        """The names shown and rated (distinct), as of the last round."""
        self.revealed = not blind
        self.rounds: list[RoundResult] = []
        self._running = False

    # -- display -------------------------------------------------------------------------------

    def slot_of(self, pane: int) -> int:
        return self.order.index(pane)

    def display_name(self, pane: int) -> str:
        """ "Model A", "Model B", ... by display slot while blind and not voted; else the name."""
        if self.blind and not self.revealed:
            return f"Model {'ABCD'[self.slot_of(pane)]}"
        return self.names[pane]

    @property
    def running(self) -> bool:
        return self._running

    # -- running -------------------------------------------------------------------------------

    def chains(self, mode: str) -> list[list[int]]:
        """Which panes take turns: each inner list runs in order; the lists run in parallel."""
        if mode == "parallel":
            return [[i] for i in range(len(self.panes))]
        if mode == "sequential":
            return [list(range(len(self.panes)))]
        if mode == "per-server":
            groups: dict[str, list[int]] = {}
            for index, pane in enumerate(self.panes):
                try:
                    key = server_key(pane.endpoint)
                except PodlabError:
                    key = f"invalid:{index}"
                groups.setdefault(key, []).append(index)
            return list(groups.values())
        raise PodlabError(f"unknown comparison mode {mode!r}", "use " + ", ".join(MODES))

    async def run(
        self, prompt: str, mode: str = "parallel", *, remember: bool = True
    ) -> AsyncGenerator[CompareEvent, None]:
        """Send `prompt` to every pane; yield their events, then one `RoundDone`.

        With `remember`, each pane that answered adds the prompt and its answer to its own
        history. The round is saved in the store (when there is one) before `RoundDone`.
        """
        chains = self.chains(mode)
        if self._running:
            raise PodlabError("a comparison round is already running")
        if self.blind:
            self.rng.shuffle(self.order)
            self.revealed = False
            for pane in self.panes:  # an earlier round (maybe seen with names) would tell
                pane.history.clear()
        self.names = pane_names(self.panes)
        results = [
            PaneResult(i, pane.endpoint, pane.model, self.names[i])
            for i, pane in enumerate(self.panes)
        ]
        result = RoundResult(prompt, mode, self.blind, results, time.time())
        queue: asyncio.Queue[CompareEvent | None] = asyncio.Queue()
        # Clients first (one per server and key), so that no pane waits for another's setup.
        clients: dict[tuple[str, str | None], ChatClient] = {}
        problems: dict[tuple[str, str | None], str] = {}
        for pane in self.panes:
            key = (pane.endpoint, pane.api_key)
            if key not in clients and key not in problems:
                try:
                    clients[key] = ChatClient(
                        pane.endpoint,
                        pane.api_key,
                        connect_timeout=self.connect_timeout,
                        read_timeout=self.read_timeout,
                    )
                except PodlabError as exc:
                    problems[key] = exc.message
        started = time.perf_counter()
        exclusive = len(chains) == 1  # one pane at a time: energy can be told apart per pane
        tasks: list[asyncio.Task[None]] = []
        bugs: list[Exception] = []

        def client_for(pane: Pane) -> ChatClient:
            key = (pane.endpoint, pane.api_key)
            if key in problems:
                raise PodlabError(problems[key])
            return clients[key]

        async def run_pane(index: int) -> None:
            pane, pane_result = self.panes[index], results[index]
            pane_result.started_s = time.perf_counter() - started
            queue.put_nowait(PaneStarted(index, pane_result.started_s))
            measurement = await self._energy_begin() if exclusive else None
            try:
                stream = client_for(pane).stream_chat(
                    pane.messages_for(prompt), pane.model, pane.params
                )
                async with aclosing(stream):
                    async for event in stream:
                        if isinstance(event, Done):
                            _fill(pane_result, event)
                        queue.put_nowait(PaneEvent(index, event))
            except (PodlabError, httpx.HTTPError, OSError) as exc:  # this pane's server
                message = str(exc) or type(exc).__name__
                _pane_failed(queue, index, pane_result, message, "connection")
            except Exception as exc:  # a bug: the other panes go on, the caller gets it after
                bugs.append(exc)
                _pane_failed(queue, index, pane_result, f"{type(exc).__name__}: {exc}", "internal")
            pane_result.finished_s = time.perf_counter() - started
            if measurement is not None:
                pane_result.energy_j = await _energy_end(measurement)

        async def run_chain(chain: list[int]) -> None:
            previous: int | None = None
            for index in chain:
                if previous is not None:
                    results[index].waited_for = previous
                    results[index].waited_s = time.perf_counter() - started
                await run_pane(index)
                previous = index

        def all_done(future: asyncio.Future[list[None]]) -> None:
            if not future.cancelled():
                future.exception()  # retrieved here; panes report their own errors
            queue.put_nowait(None)

        self._running = True  # no await since the check above: nothing else started a round
        try:
            round_energy = await self._energy_begin()
            tasks = [asyncio.create_task(run_chain(chain)) for chain in chains]
            asyncio.gather(*tasks).add_done_callback(all_done)
            while (item := await queue.get()) is not None:
                yield item
            result.total_s = time.perf_counter() - started
            if round_energy is not None:
                result.energy_j = await _energy_end(round_energy)
            self._finish_round(result, remember)
            yield RoundDone(result)
            if bugs:  # the round is saved and shown; now the error handler hears of the bug
                raise bugs[0]
        finally:
            # Stop the panes first (closing their streams and connections), then the clients.
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for client in clients.values():
                await client.aclose()
            self._running = False

    async def run_to_end(
        self,
        prompt: str,
        mode: str = "parallel",
        on_event: Callable[[CompareEvent], None] | None = None,
        *,
        remember: bool = True,
    ) -> RoundResult:
        """`run()` with a callback instead of an iterator; returns the round's results."""
        final: RoundResult | None = None
        async for event in self.run(prompt, mode, remember=remember):
            if on_event is not None:
                on_event(event)
            if isinstance(event, RoundDone):
                final = event.result
        assert final is not None
        return final

    async def run_prompt_set(
        self,
        prompts: Sequence[str],
        mode: str = "parallel",
        on_event: Callable[[int, CompareEvent], None] | None = None,
        *,
        remember: bool = False,
    ) -> PromptSetResult:
        """Run each prompt as its own round (no history between them unless `remember`)."""
        outcome = PromptSetResult([pane.describe() for pane in self.panes], mode)
        for index, prompt in enumerate(prompts):

            def forward(event: CompareEvent, index: int = index) -> None:
                if on_event is not None:
                    on_event(index, event)

            outcome.rounds.append(await self.run_to_end(prompt, mode, forward, remember=remember))
        return outcome

    def _same_server(self, a: int, b: int) -> bool:
        return server_key_or_text(self.panes[a].endpoint) == server_key_or_text(
            self.panes[b].endpoint
        )

    def _find_queueing(self, result: RoundResult) -> None:
        """Panes sent together to one server that answered them one after another: the later
        one's first token came only once the other had finished."""
        for pane in result.panes:
            first = _first_token_s(pane)
            if first is None or pane.started_s is None:
                continue
            for other in result.panes:
                if (
                    other is pane
                    or other.finished_s is None
                    or _first_token_s(other) is None
                    or not self._same_server(pane.pane, other.pane)
                ):
                    continue
                other_first = _first_token_s(other)
                assert other_first is not None
                waited = other.finished_s - pane.started_s
                served_after = other_first < first and first >= other.finished_s - 0.02
                if served_after and waited > pane.queued_s:
                    pane.queued_s = min(waited, first - pane.started_s)
                    pane.waited_s, pane.waited_for = pane.queued_s, other.pane

    def _finish_round(self, result: RoundResult, remember: bool) -> None:
        self._find_queueing(result)
        times = [(p.answer_s, p.pane) for p in result.panes if p.ok and p.answer_s is not None]
        if times:
            best = min(times)[1]
            result.fastest = best
            result.panes[best].fastest = True
        if remember:
            for pane, pane_result in zip(self.panes, result.panes, strict=True):
                if pane_result.text:
                    pane.history.append({"role": "user", "content": result.prompt})
                    pane.history.append({"role": "assistant", "content": pane_result.text})
        if self.store is not None:
            record = result.to_dict()
            record["panes_config"] = [pane.describe() for pane in self.panes]
            result.comparison_id = self.store.save_comparison(
                result.prompt, result.mode, record, blind=self.blind
            )
        self.rounds.append(result)

    async def _energy_begin(self) -> Measurement | None:
        if self.energy is None:
            return None
        return await asyncio.to_thread(self.energy.measure)

    # -- voting --------------------------------------------------------------------------------

    def vote_problem(self) -> str | None:
        """Why a vote on the last round could not count (asked before offering the vote)."""
        if self._running:
            return "wait for the round to finish before voting"
        if not self.rounds:
            return "nothing to vote on yet: run a prompt first"
        last = self.rounds[-1]
        if last.voted:
            return "this round already has a vote"
        failed = [self.display_name(p.pane) for p in last.panes if not p.ok]
        if failed:
            return (
                f"{' and '.join(failed)} did not answer completely, so this round cannot be"
                " voted on: send the prompt again"
            )
        players = [p.label for p in last.panes]
        twice = sorted({name for name in players if players.count(name) > 1})
        if twice:
            return f"two panes are rated as {twice[0]!r}: give them different names"
        return None

    def vote(self, winner: int | None) -> VoteRecord:
        """Vote on the last round: `winner` is a pane index (not a display slot), None a tie.

        Refused (PodlabError) when the vote could not count (`vote_problem`). Reveals the
        names. The vote is stored (and counts in `leaderboard()`) when the comparison has a
        store.
        """
        problem = self.vote_problem()
        if problem is not None:
            raise PodlabError(problem)
        if winner is not None and not 0 <= winner < len(self.panes):
            raise PodlabError(f"pane {winner} does not exist")
        last = self.rounds[-1]
        players = [p.label for p in last.panes]
        if self.store is not None:
            record = self.store.add_vote(players, winner, comparison_id=last.comparison_id)
        else:
            record = VoteRecord(0, None, time.time(), players, winner)
        last.vote, last.voted = winner, True
        self.revealed = True
        return record

    def leaderboard(self) -> list[EloRating]:
        """The Elo table over every vote in the store (empty without a store)."""
        if self.store is None:
            return []
        return compute_leaderboard(self.store.votes())

    def to_dict(self) -> dict[str, Any]:
        return {
            "panes": [pane.describe() for pane in self.panes],
            "rounds": [r.to_dict() for r in self.rounds],
        }

    def to_markdown(self) -> str:
        return "\n".join(r.to_markdown(heading=f"Round {i + 1}") for i, r in enumerate(self.rounds))


# ---------------------------------------------------------------------------------------------
# Prompt files and helpers


def load_prompts(path: Path | str) -> list[str]:
    """Prompts from a file: a JSON or YAML list (strings, or objects with "prompt"), else one
    prompt per non-empty line."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PodlabError(f"cannot read the prompt file {file}: {exc.strerror or exc}") from None
    suffix = file.suffix.lower()
    if suffix in (".json", ".yaml", ".yml"):
        try:
            if suffix == ".json":
                data: Any = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:
            raise PodlabError(f"{file}: not valid {suffix[1:].upper()}: {exc}") from None
        if isinstance(data, Mapping) and isinstance(data.get("prompts"), list):
            data = data["prompts"]
        if not isinstance(data, list):
            raise PodlabError(f"{file}: expected a list of prompts")
        prompts = []
        for index, item in enumerate(data):
            if isinstance(item, Mapping):
                item = item.get("prompt")
            if not isinstance(item, str) or not item.strip():
                raise PodlabError(f"{file}: item {index + 1} is not a prompt (a non-empty text)")
            prompts.append(item)
    else:
        prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise PodlabError(f"{file} has no prompts")
    return prompts


def _pane_failed(
    queue: asyncio.Queue[CompareEvent | None],
    index: int,
    result: PaneResult,
    message: str,
    kind: ErrorKind,
) -> None:
    """Finish a pane that raised: its error event and a Done, as a failed stream ends."""
    result.error = message
    metrics = Metrics(None, 0, None, 0.0)
    queue.put_nowait(PaneEvent(index, Error(message, None, kind)))
    queue.put_nowait(PaneEvent(index, Done(None, metrics, error=message)))


def _first_token_s(result: PaneResult) -> float | None:
    """When the first token came, in seconds after the round started."""
    if result.started_s is None or result.metrics is None or result.metrics.ttft_ms is None:
        return None
    return result.started_s + result.metrics.ttft_ms / 1000.0


def _fill(result: PaneResult, done: Done) -> None:
    result.text = done.text
    result.metrics = done.metrics
    result.error = done.error
    result.interrupted = done.interrupted
    result.finish_reason = done.finish_reason


async def _energy_end(measurement: Measurement) -> float | None:
    report = await asyncio.to_thread(measurement.stop)
    return report.joules


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _one_line(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        value = f"{value:.1f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _metrics_table(panes: Sequence[PaneResult]) -> list[str]:
    headers = ["#", "Pane", "State", "TTFT ms", "Tokens", "Tokens/s", "Total s", "Tokens/J"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for pane in panes:
        m = pane.metrics
        cells = [
            f"{pane.pane + 1}{' ★' if pane.fastest else ''}",
            pane.label,
            pane.state,
            None if m is None else m.ttft_ms,
            None if m is None else m.tokens,
            None if m is None else m.tokens_per_s,
            None if m is None else m.total_ms / 1000.0,
            pane.tokens_per_j,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines
