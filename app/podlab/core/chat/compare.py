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

Blind mode shuffles the display order each round (`order[slot] == pane index`) and hides names
(`display_name`) until `vote()`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
    started_s: float | None = None  # seconds after the round started
    finished_s: float | None = None
    fastest: bool = False
    energy_j: float | None = None

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
    fastest: int | None = None  # pane index with the best tokens/s among complete answers
    energy_j: float | None = None
    comparison_id: int | None = None  # row id in the store, when saved
    vote: int | None = None
    voted: bool = False

    @property
    def tokens_per_j(self) -> float | None:
        """Tokens of every pane per joule of the whole round (also when panes ran together)."""
        tokens = sum(p.metrics.tokens for p in self.panes if p.metrics is not None)
        return tokens_per_joule(tokens, self.energy_j)

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
        lines.append(f"_mode {self.mode}, {self.to_dict()['started']}, {self.total_s:.2f} s_")
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
        lines = ["# Prompt set", "", f"_{len(self.rounds)} prompts, mode {self.mode}_", ""]
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
        return self.panes[pane].name

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
        results = [
            PaneResult(i, pane.endpoint, pane.model, pane.name) for i, pane in enumerate(self.panes)
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
            for index in chain:
                await run_pane(index)

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

    def _finish_round(self, result: RoundResult, remember: bool) -> None:
        rates = [
            (p.metrics.tokens_per_s, p.pane)
            for p in result.panes
            if p.ok and p.metrics is not None and p.metrics.tokens_per_s is not None
        ]
        if rates:
            best = max(rates, key=lambda item: (item[0], -item[1]))[1]
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

    def vote(self, winner: int | None) -> VoteRecord:
        """Vote on the last round: `winner` is a pane index (not a display slot), None a tie.

        Reveals the names. The vote is stored (and counts in `leaderboard()`) when the
        comparison has a store.
        """
        if self._running:
            raise PodlabError("wait for the round to finish before voting")
        if not self.rounds:
            raise PodlabError("nothing to vote on yet: run a prompt first")
        last = self.rounds[-1]
        if last.voted:
            raise PodlabError("this round already has a vote")
        if winner is not None and not 0 <= winner < len(self.panes):
            raise PodlabError(f"pane {winner} does not exist")
        players = [pane.name for pane in self.panes]
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
