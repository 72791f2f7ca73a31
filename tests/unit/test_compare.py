"""Comparison core: Elo math, prompt files, exports, energy readings (fake powercap tree and fake
nvidia-smi), and the run modes against two real fault servers on 127.0.0.1 (timestamps)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from podlab.core.chat.client import Done, Error, GenerationParams, Metrics, Token
from podlab.core.chat.compare import (
    Comparison,
    EloRating,
    Pane,
    PaneEvent,
    PaneResult,
    PaneStarted,
    RoundDone,
    RoundResult,
    apply_vote,
    compute_leaderboard,
    elo_update,
    expected_score,
    load_prompts,
    pane_names,
)
from podlab.core.chat.conversations import ConversationStore, VoteRecord
from podlab.core.chat.energy import EnergyMeter, tokens_per_joule
from podlab.core.errors import PodlabError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faultserver import ANSWER_TEXT, FaultServer, RequestRecord


class TestElo:
    pytestmark = pytest.mark.unit

    def test_expected_score(self) -> None:
        assert expected_score(1000, 1000) == 0.5
        assert expected_score(1200, 1000) == pytest.approx(0.7597, abs=1e-4)
        assert expected_score(1000, 1200) == pytest.approx(1 - 0.7597, abs=1e-4)

    def test_update_equal_ratings(self) -> None:
        assert elo_update(1000, 1000, 1.0) == (1016.0, 984.0)
        assert elo_update(1000, 1000, 0.0) == (984.0, 1016.0)
        assert elo_update(1000, 1000, 0.5) == (1000.0, 1000.0)

    def test_update_favourite_and_underdog(self) -> None:
        a, b = elo_update(1200, 1000, 1.0)  # the favourite wins: small gain
        assert a == pytest.approx(1200 + 32 * (1 - 0.7597), abs=0.01)
        assert a + b == pytest.approx(2200)
        a, b = elo_update(1200, 1000, 0.0)  # the underdog wins: big gain
        assert b - 1000 == pytest.approx(32 * 0.7597, abs=0.01)
        a, b = elo_update(1200, 1000, 0.5)  # a tie moves the favourite down
        assert a < 1200 and b > 1000

    def test_multi_pane_vote_winner_beats_each_other_pane(self) -> None:
        ratings: dict[str, EloRating] = {}
        apply_vote(ratings, ["a", "b", "c"], 0)
        assert ratings["a"].rating == pytest.approx(1032)
        assert ratings["b"].rating == pytest.approx(984)
        assert ratings["c"].rating == pytest.approx(984)
        assert (ratings["a"].wins, ratings["a"].games) == (2, 2)
        assert (ratings["b"].losses, ratings["b"].games) == (1, 1)  # b and c did not play

    def test_tie_between_three(self) -> None:
        ratings = {"a": EloRating("a", 1100)}
        apply_vote(ratings, ["a", "b", "c"], None)
        assert ratings["a"].rating < 1100
        assert ratings["b"].rating == ratings["c"].rating > 1000
        assert sum(r.rating for r in ratings.values()) == pytest.approx(3100)
        assert ratings["a"].ties == 2

    def test_same_model_twice_plays_nobody(self) -> None:
        ratings: dict[str, EloRating] = {}
        apply_vote(ratings, ["a", "a"], 0)
        assert ratings["a"].rating == 1000 and ratings["a"].games == 0

    def test_leaderboard_replays_votes_in_order(self) -> None:
        votes = [
            VoteRecord(1, None, 0, ["x", "y"], 0),
            VoteRecord(2, None, 0, ["y", "x"], 0),
            VoteRecord(3, None, 0, ["x", "z"], 0),
        ]
        board = compute_leaderboard(votes)
        assert [r.name for r in board] == ["x", "y", "z"]
        x = board[0]
        assert (x.wins, x.losses, x.games) == (2, 1, 3)
        # The same result step by step
        rx, ry = elo_update(1000, 1000, 1)
        ry, rx = elo_update(ry, rx, 1)
        rx, _ = elo_update(rx, 1000, 1)
        assert x.rating == pytest.approx(rx)


class TestPaneNames:
    pytestmark = pytest.mark.unit

    def test_one_model_two_temperatures_named_by_the_temperature(self) -> None:
        panes = [
            Pane("http://127.0.0.1:8080", "SmolLM2", GenerationParams(temperature=0.2, seed=1)),
            Pane("http://127.0.0.1:8080", "SmolLM2", GenerationParams(temperature=1.0, seed=1)),
        ]
        assert pane_names(panes) == ["SmolLM2 · T=0.2", "SmolLM2 · T=1"]

    def test_different_models_keep_their_names_and_show_what_else_differs(self) -> None:
        panes = [
            Pane("http://h:1", "a"),
            Pane("http://h:1", "b", GenerationParams(max_tokens=64)),
            Pane("http://h:1", "c", system_prompt="Answer in French, please"),
        ]
        assert pane_names(panes) == [
            "a",
            "b · max tokens=64",
            "c · system “Answer in Frenc…”",
        ]

    def test_only_the_endpoint_differs(self) -> None:
        panes = [Pane("http://10.0.0.1:8000/v1", "m"), Pane("http://10.0.0.2:8000", "m")]
        assert pane_names(panes) == ["m @ 10.0.0.1:8000", "m @ 10.0.0.2:8000"]

    def test_labels_kept_unless_shared_and_names_always_distinct(self) -> None:
        same = [Pane("http://h:1", "m", label="x"), Pane("http://h:1", "m", label="y")]
        assert pane_names(same) == ["x", "y"]
        clash = [
            Pane("http://h:1", "m", GenerationParams(top_k=5), label="mine"),
            Pane("http://h:1", "m", GenerationParams(top_k=9), label="mine"),
        ]
        assert pane_names(clash) == ["mine · top-k=5", "mine · top-k=9"]
        twins = [Pane("http://h:1", "m"), Pane("http://h:1/v1", "m"), Pane("http://h:2", "n")]
        names = pane_names(twins)
        assert names == ["m (1)", "m (2)", "n"]


class TestPromptsAndExport:
    pytestmark = pytest.mark.unit

    def test_load_prompts_formats(self, tmp_path: Path) -> None:
        lines = tmp_path / "p.txt"
        lines.write_text("first prompt\n\n  \nsecond prompt\n", encoding="utf-8")
        assert load_prompts(lines) == ["first prompt", "second prompt"]
        as_json = tmp_path / "p.json"
        as_json.write_text(json.dumps(["a", {"prompt": "b"}]), encoding="utf-8")
        assert load_prompts(as_json) == ["a", "b"]
        as_yaml = tmp_path / "p.yaml"
        as_yaml.write_text("prompts:\n  - one\n  - 'two: with colon'\n", encoding="utf-8")
        assert load_prompts(as_yaml) == ["one", "two: with colon"]

    @pytest.mark.parametrize(
        ("name", "content", "problem"),
        [
            ("e.txt", "\n\n", "no prompts"),
            ("bad.json", "[1, 2]", "not a prompt"),
            ("bad2.json", "{", "not valid JSON"),
            ("obj.yaml", "a: b\n", "expected a list"),
        ],
    )
    def test_load_prompts_errors(
        self, tmp_path: Path, name: str, content: str, problem: str
    ) -> None:
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        with pytest.raises(PodlabError, match=problem):
            load_prompts(path)
        with pytest.raises(PodlabError, match="cannot read"):
            load_prompts(tmp_path / "missing.txt")

    def test_round_export(self) -> None:
        metrics = Metrics(ttft_ms=12.0, tokens=7, tokens_per_s=70.0, total_ms=150.0)
        panes = [
            PaneResult(
                0,
                "http://a",
                "m|1",
                "m|1",
                "answer one",
                metrics,
                started_s=0,
                finished_s=0.1,
                fastest=True,
            ),
            PaneResult(
                1, "http://b", "m2", "m2", "", None, error="boom", started_s=0, finished_s=0.1
            ),
        ]
        result = RoundResult("Why?", "parallel", False, panes, time.time(), 0.2, 0)
        markdown = result.to_markdown()
        assert "**Prompt:** Why?" in markdown
        assert "| 1 ★ | m\\|1 | complete | 12.0 | 7 | 70.0 | 0.1 |" in markdown
        assert "> error: boom" in markdown
        data = json.loads(json.dumps(result.to_dict()))
        assert data["panes"][0]["metrics"]["tokens_per_s"] == 70.0
        assert data["panes"][1]["state"] == "error"
        assert data["fastest"] == 0

    def test_pane_count_and_mode_checks(self) -> None:
        with pytest.raises(PodlabError, match="2 to 4"):
            Comparison([Pane("http://a")])
        with pytest.raises(PodlabError, match="2 to 4"):
            Comparison([Pane("http://a")] * 5)
        comparison = Comparison([Pane("http://a"), Pane("http://b")])
        with pytest.raises(PodlabError, match="unknown comparison mode"):
            comparison.chains("turbo")
        with pytest.raises(PodlabError, match="run a prompt first"):
            comparison.vote(0)

    def test_per_server_groups_by_normalized_url(self) -> None:
        panes = [
            Pane("http://127.0.0.1:8080"),
            Pane("http://127.0.0.1:9090/v1"),
            Pane("http://127.0.0.1:8080/v1/"),
            Pane("not a url at all ::"),
        ]
        comparison = Comparison(panes)
        assert comparison.chains("per-server") == [[0, 2], [1], [3]]
        assert comparison.chains("parallel") == [[0], [1], [2], [3]]
        assert comparison.chains("sequential") == [[0, 1, 2, 3]]


# -- energy ----------------------------------------------------------------------------------------


def make_powercap(root: Path, zones: dict[str, tuple[str, int, int]]) -> None:
    """zones: relative dir -> (name, energy_uj, max_energy_range_uj)."""
    for rel, (name, energy, max_range) in zones.items():
        zone = root / rel
        zone.mkdir(parents=True, exist_ok=True)
        (zone / "name").write_text(name + "\n")
        (zone / "energy_uj").write_text(f"{energy}\n")
        (zone / "max_energy_range_uj").write_text(f"{max_range}\n")


def set_energy(root: Path, rel: str, value: int) -> None:
    (root / rel / "energy_uj").write_text(f"{value}\n")


class TestEnergy:
    pytestmark = pytest.mark.unit

    def test_rapl_packages_and_dram_counted_psys_and_core_skipped(self, tmp_path: Path) -> None:
        make_powercap(
            tmp_path,
            {
                "intel-rapl:0": ("package-0", 1_000_000, 262_143_328_850),
                "intel-rapl:0/intel-rapl:0:0": ("core", 500_000, 262_143_328_850),
                "intel-rapl:0/intel-rapl:0:2": ("dram", 100_000, 65_712_999_613),
                "intel-rapl:1": ("psys", 9_000_000, 262_143_328_850),
                "intel-rapl-mmio:0": ("package-0", 7, 100),
            },
        )
        meter = EnergyMeter(powercap_root=tmp_path, use_nvidia=False)
        assert meter.available
        assert meter.sources == ["rapl (package-0, package-0/dram)"]
        meter.start()
        set_energy(tmp_path, "intel-rapl:0", 13_500_000)  # +12.5 J
        set_energy(tmp_path, "intel-rapl:0/intel-rapl:0:2", 2_100_000)  # +2 J
        set_energy(tmp_path, "intel-rapl:0/intel-rapl:0:0", 99_000_000)  # ignored (in package)
        set_energy(tmp_path, "intel-rapl:1", 99_000_000)  # ignored (psys)
        assert meter.stop() == pytest.approx(14.5)
        assert meter.last is not None and meter.last.by_source == {"rapl": pytest.approx(14.5)}

    def test_rapl_wraparound(self, tmp_path: Path) -> None:
        make_powercap(tmp_path, {"intel-rapl:0": ("package-0", 999_000_000, 1_000_000_000)})
        meter = EnergyMeter(powercap_root=tmp_path, use_nvidia=False)
        meter.start()
        set_energy(tmp_path, "intel-rapl:0", 3_000_000)  # wrapped: 1 J to the top, then 3 J
        assert meter.stop() == pytest.approx(4.0)

    def test_two_packages_sum(self, tmp_path: Path) -> None:
        make_powercap(
            tmp_path,
            {
                "intel-rapl:0": ("package-0", 0, 10**12),
                "intel-rapl:1": ("package-1", 0, 10**12),
            },
        )
        meter = EnergyMeter(powercap_root=tmp_path, use_nvidia=False)
        first = meter.measure()
        assert first is not None
        set_energy(tmp_path, "intel-rapl:0", 1_000_000)
        second = meter.measure()  # measurements are independent
        assert second is not None
        set_energy(tmp_path, "intel-rapl:1", 2_000_000)
        assert first.stop().joules == pytest.approx(3.0)
        assert second.stop().joules == pytest.approx(2.0)

    def test_not_available_says_why(self, tmp_path: Path) -> None:
        meter = EnergyMeter(powercap_root=tmp_path / "absent", use_nvidia=False)
        assert not meter.available
        assert "not available" in meter.reason and "does not exist" in meter.reason
        meter.start()
        assert meter.stop() is None
        empty = EnergyMeter(powercap_root=tmp_path, use_nvidia=False)
        assert "no RAPL zones" in empty.reason

    def test_unreadable_counter(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        make_powercap(tmp_path, {"intel-rapl:0": ("package-0", 1, 100)})
        real_read = Path.read_text

        def deny(self: Path, *args: object, **kwargs: object) -> str:
            if self.name == "energy_uj":
                raise PermissionError(13, "Permission denied")
            return real_read(self)

        monkeypatch.setattr(Path, "read_text", deny)
        meter = EnergyMeter(powercap_root=tmp_path, use_nvidia=False)
        assert not meter.available
        assert "root only" in meter.reason

    def test_nvidia_energy_counter(self, tmp_path: Path) -> None:
        readings = iter(["1000000\n2000000\n", "1000000\n2000000\n", "1500000\n2250000\n"])
        calls: list[Sequence[str]] = []

        def runner(args: Sequence[str]) -> str:
            calls.append(args)
            return next(readings)

        meter = EnergyMeter(powercap_root=tmp_path / "none", nvidia_runner=runner)
        meter.start()
        assert meter.stop() == pytest.approx(750.0)  # (500000 + 250000) mJ
        assert meter.sources == ["nvidia (counter)"]
        assert "--query-gpu=total_energy_consumption" in calls[0]

    def test_nvidia_power_sampling(self, tmp_path: Path) -> None:
        def runner(args: Sequence[str]) -> str:
            if "--query-gpu=total_energy_consumption" in args:
                return "[N/A]\n[N/A]\n"
            return "100.00\n50.00\n"  # two GPUs: 150 W

        meter = EnergyMeter(
            powercap_root=tmp_path / "none", nvidia_runner=runner, sample_interval=0.01
        )
        meter.start()
        time.sleep(0.2)
        joules = meter.stop()
        assert meter.last is not None and meter.last.average_watts is not None
        assert joules is not None and joules > 0
        assert meter.last.average_watts == pytest.approx(150.0, rel=0.15)

    def test_nvidia_missing(self, tmp_path: Path) -> None:
        def runner(args: Sequence[str]) -> str:
            raise FileNotFoundError("nvidia-smi")

        meter = EnergyMeter(powercap_root=tmp_path / "none", nvidia_runner=runner)
        assert not meter.available
        assert "nvidia" in meter.reason


# -- against the fault server -----------------------------------------------------------------


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FaultServer, FaultServer]]:
    async with FaultServer() as first, FaultServer() as second:
        yield first, second


def slow(tag: str) -> str:
    """A model name: 8 tokens at 40 tokens/s (about 0.2 s), tagged to find the request."""
    return f"synthetic?tokens=8&tps=40&tag={tag}"


def by_tag(*servers: FaultServer) -> dict[str, RequestRecord]:
    out = {}
    for server in servers:
        for record in server.chat_requests():
            out[record.options["tag"]] = record
    return out


def overlap(a: RequestRecord, b: RequestRecord) -> bool:
    assert a.finished is not None and b.finished is not None
    return a.started < b.finished and b.started < a.finished


def before(a: RequestRecord, b: RequestRecord) -> bool:
    assert a.finished is not None
    return a.finished <= b.started + 0.005  # the next request starts after the answer ended


async def collect(comparison: Comparison, prompt: str, mode: str) -> tuple[list, RoundResult]:
    events = [event async for event in comparison.run(prompt, mode)]
    assert isinstance(events[-1], RoundDone)
    return events, events[-1].result


@pytest.fixture
def four_panes(servers: tuple[FaultServer, FaultServer]) -> list[Pane]:
    a, b = servers
    return [
        Pane(a.url, slow("a0")),
        Pane(b.url, slow("b0")),
        Pane(a.url + "/v1", slow("a1")),  # the same server as pane 0, spelled differently
        Pane(b.url, slow("b1")),
    ]


class TestModes:
    pytestmark = pytest.mark.integration

    async def test_parallel_runs_every_pane_at_once(
        self, servers: tuple[FaultServer, FaultServer], four_panes: list[Pane]
    ) -> None:
        events, result = await collect(Comparison(four_panes), "go", "parallel")
        requests = by_tag(*servers)
        assert set(requests) == {"a0", "a1", "b0", "b1"}
        records = list(requests.values())
        assert max(r.started for r in records) < min(r.finished or 0 for r in records)
        assert all(p.ok and p.text == " tok" * 8 for p in result.panes)
        starts = [e for e in events if isinstance(e, PaneStarted)]
        assert len(starts) == 4 and max(e.at for e in starts) < 0.1

    async def test_per_server_panes_on_one_server_take_turns(
        self, servers: tuple[FaultServer, FaultServer], four_panes: list[Pane]
    ) -> None:
        _events, result = await collect(Comparison(four_panes), "go", "per-server")
        r = by_tag(*servers)
        assert before(r["a0"], r["a1"]) and not overlap(r["a0"], r["a1"])
        assert before(r["b0"], r["b1"]) and not overlap(r["b0"], r["b1"])
        assert overlap(r["a0"], r["b0"]) and overlap(r["a1"], r["b1"])  # servers in parallel
        p = result.panes
        assert p[2].started_s is not None and p[0].finished_s is not None
        assert p[2].started_s >= p[0].finished_s - 0.001
        assert all(pane.ok for pane in result.panes)

    async def test_sequential_runs_one_pane_after_another_in_order(
        self, servers: tuple[FaultServer, FaultServer], four_panes: list[Pane]
    ) -> None:
        events, result = await collect(Comparison(four_panes), "go", "sequential")
        r = by_tag(*servers)
        ordered = [r["a0"], r["b0"], r["a1"], r["b1"]]
        for first, second in itertools.pairwise(ordered):
            assert before(first, second)
        started = [e.pane for e in events if isinstance(e, PaneStarted)]
        assert started == [0, 1, 2, 3]
        # Events of one pane never interleave with another's in sequential mode.
        panes_in_order = [e.pane for e in events if isinstance(e, PaneEvent | PaneStarted)]
        assert panes_in_order == sorted(panes_in_order)
        assert result.total_s >= 4 * 0.17

    async def test_a_failing_pane_never_stops_the_others(
        self, servers: tuple[FaultServer, FaultServer]
    ) -> None:
        a, _ = servers
        panes = [
            Pane(a.url, "http_error?status=503"),
            Pane("http://127.0.0.1:1", "normal"),  # nothing listens there
            Pane(a.url, "drop"),
            Pane(a.url, "normal"),
        ]
        for mode in ("parallel", "per-server", "sequential"):
            _events, result = await collect(Comparison(panes), "hi", mode)
            states = [p.state for p in result.panes]
            assert states == ["error", "error", "interrupted", "complete"], mode
            assert result.panes[3].text == ANSWER_TEXT
            assert "not loaded" in (result.panes[0].error or "")
            assert "cannot reach" in (result.panes[1].error or "")
            assert result.panes[2].text == "Hello, wörld"
            assert result.fastest == 3 and result.panes[3].fastest

    async def test_an_invalid_endpoint_is_a_pane_error(
        self, servers: tuple[FaultServer, FaultServer]
    ) -> None:
        a, _ = servers
        panes = [Pane("ftp://nowhere", "normal"), Pane(a.url, "normal")]
        events, result = await collect(Comparison(panes), "hi", "parallel")
        assert result.panes[0].state == "error" and "not an http" in (result.panes[0].error or "")
        assert result.panes[1].ok
        done = [e for e in events if isinstance(e, PaneEvent) and isinstance(e.event, Done)]
        assert sorted(e.pane for e in done) == [0, 1]

    async def test_a_bug_in_a_pane_is_raised_not_shown_as_a_connection_error(
        self, servers: tuple[FaultServer, FaultServer]
    ) -> None:
        a, _ = servers
        broken = Pane(a.url, "normal", history=None)  # a caller's bug: no list of messages
        comparison = Comparison([broken, Pane(a.url, "normal")])
        events: list[object] = []
        with pytest.raises(TypeError):
            async for event in comparison.run("hi", "parallel"):
                events.append(event)
        errors = [
            e.event for e in events if isinstance(e, PaneEvent) and isinstance(e.event, Error)
        ]
        assert [error.kind for error in errors] == ["internal"]
        assert errors[0].message.startswith("TypeError")
        assert isinstance(events[-1], RoundDone)  # the round finished before the error came
        assert events[-1].result.panes[1].ok and events[-1].result.panes[0].state == "error"

    async def test_histories_are_independent(
        self, servers: tuple[FaultServer, FaultServer]
    ) -> None:
        a, b = servers
        panes = [Pane(a.url, "echo"), Pane(b.url, "echo", system_prompt="be nice")]
        comparison = Comparison(panes)
        await collect(comparison, "first", "parallel")
        _events, result = await collect(comparison, "second", "parallel")
        assert result.panes[0].text == "echo: second | messages=3"
        assert result.panes[1].text == "echo: second | messages=4"
        second_request = a.chat_requests()[-1].body
        assert [m["content"] for m in second_request["messages"]] == [
            "first",
            "echo: first | messages=1",
            "second",
        ]
        assert len(panes[0].history) == 4 and len(panes[1].history) == 4
        assert panes[0].history is not panes[1].history

    async def test_fastest_is_the_first_complete_answer_not_the_best_rate(
        self, servers: tuple[FaultServer, FaultServer]
    ) -> None:
        a, b = servers
        panes = [
            Pane(a.url, "synthetic?tokens=10&tps=50"),  # 0.2 s
            Pane(b.url, "synthetic?tokens=10&tps=200"),  # 0.05 s
            Pane(a.url, "synthetic?tokens=40&tps=250"),  # the best rate, but 0.16 s
        ]
        _events, result = await collect(Comparison(panes), "go", "parallel")
        assert result.fastest == 1
        assert [p.fastest for p in result.panes] == [False, True, False]
        times = [p.answer_s for p in result.panes]
        assert times[1] is not None and all(t is not None and t > times[1] for t in times[::2])
        rates = [p.metrics.tokens_per_s for p in result.panes if p.metrics]
        assert rates[0] == pytest.approx(50, rel=0.4)
        assert rates[1] == pytest.approx(200, rel=0.4)

    async def test_waiting_for_another_pane_on_one_server_is_said_and_not_counted(
        self,
    ) -> None:
        async with FaultServer(one_at_a_time=True) as server:
            panes = [
                Pane(server.url, "synthetic?tokens=20&tps=40"),  # about 0.5 s
                Pane(server.url, "synthetic?tokens=12&tps=40"),  # about 0.3 s, once served
            ]
            for mode in ("parallel", "per-server"):
                _events, result = await collect(Comparison(panes), "go", mode)
                first, second = result.panes
                assert first.waited_for is None and second.waited_for == 0, mode
                assert second.waited_s >= 0.3, mode
                # Its own answer took less than the other's: it is the fastest, although the
                # user saw it finish last.
                assert second.answer_s is not None and first.answer_s is not None
                assert second.answer_s < first.answer_s < second.finished_s, mode
                assert result.fastest == 1, mode
                (line,) = result.waits()
                assert line.startswith("pane 2 waited 0.") and "for pane 1 on the same" in line

    async def test_one_round_at_a_time(self, servers: tuple[FaultServer, FaultServer]) -> None:
        a, b = servers
        comparison = Comparison([Pane(a.url, "stall"), Pane(b.url, "stall")])
        first = comparison.run("hi", "parallel")
        assert isinstance(await anext(first), PaneStarted)
        assert comparison.running
        with pytest.raises(PodlabError, match="already running"):
            await anext(comparison.run("again", "parallel"))
        await first.aclose()
        assert not comparison.running

    async def test_params_reach_each_server(self, servers: tuple[FaultServer, FaultServer]) -> None:
        a, b = servers
        panes = [
            Pane(a.url, "normal", GenerationParams(temperature=0.1, stop=["x"])),
            Pane(b.url, "normal", GenerationParams(top_k=5, seed=7, n_ctx=4096)),
        ]
        await collect(Comparison(panes), "hi", "parallel")
        body_a, body_b = a.chat_requests()[0].body, b.chat_requests()[0].body
        assert body_a["temperature"] == 0.1 and body_a["stop"] == ["x"]
        assert "top_k" not in body_a
        assert body_b["top_k"] == 5 and body_b["seed"] == 7 and "n_ctx" not in body_b
        assert body_a["stream"] is True and body_a["stream_options"] == {"include_usage": True}

    async def test_blind_vote_and_leaderboard(
        self, servers: tuple[FaultServer, FaultServer], tmp_path: Path
    ) -> None:
        a, b = servers
        with ConversationStore(tmp_path / "db.sqlite3") as store:
            panes = [
                Pane(a.url, "normal", label="alpha"),
                Pane(b.url, "echo", label="beta"),
                Pane(a.url, "echo", label="gamma"),
            ]
            comparison = Comparison(panes, store=store, blind=True, rng=random.Random(3))
            _events, result = await collect(comparison, "hi", "parallel")
            assert sorted(comparison.order) == [0, 1, 2]
            hidden = {comparison.display_name(i) for i in range(3)}
            assert hidden == {"Model A", "Model B", "Model C"}
            slot_a = comparison.order[0]  # the pane shown first is "Model A"
            assert comparison.display_name(slot_a) == "Model A"
            assert result.comparison_id is not None
            vote = comparison.vote(1)
            assert vote.players == ["alpha", "beta", "gamma"] and vote.winner == 1
            assert comparison.display_name(1) == "beta"  # revealed
            with pytest.raises(PodlabError, match="already"):
                comparison.vote(0)
            assert comparison.vote_problem() == "this round already has a vote"
            board = comparison.leaderboard()
            assert board[0].name == "beta" and board[0].rating == pytest.approx(1032)
            assert store.votes()[0].comparison_id == result.comparison_id
            saved = store.comparisons()[0]
            assert saved.blind and saved.result["panes"][0]["text"] == ANSWER_TEXT
            # Next round: shuffled again and hidden again until the next vote.
            await collect(comparison, "again", "parallel")
            assert comparison.display_name(0).startswith("Model ")
            comparison.vote(None)
            assert len(store.votes()) == 2

    async def test_one_model_twice_is_rated_under_two_names(
        self, servers: tuple[FaultServer, FaultServer], tmp_path: Path
    ) -> None:
        a, _b = servers
        with ConversationStore(tmp_path / "db.sqlite3") as store:
            panes = [
                Pane(a.url, "normal", GenerationParams(temperature=0.2)),
                Pane(a.url, "normal", GenerationParams(temperature=0.9)),
            ]
            comparison = Comparison(panes, store=store, blind=True, rng=random.Random(1))
            _events, result = await collect(comparison, "hi", "parallel")
            assert [p.label for p in result.panes] == ["normal · T=0.2", "normal · T=0.9"]
            assert comparison.vote_problem() is None
            comparison.vote(0)
            board = {r.name: r for r in comparison.leaderboard()}
            assert board["normal · T=0.2"].games == board["normal · T=0.9"].games == 1
            assert board["normal · T=0.2"].rating > 1000

    async def test_a_vote_that_cannot_count_is_refused_before_it_is_taken(
        self, servers: tuple[FaultServer, FaultServer], tmp_path: Path
    ) -> None:
        a, b = servers
        with ConversationStore(tmp_path / "db.sqlite3") as store:
            panes = [Pane(a.url, "normal"), Pane(b.url, "http_error?status=503")]
            comparison = Comparison(panes, store=store, blind=True, rng=random.Random(2))
            await collect(comparison, "hi", "parallel")
            problem = comparison.vote_problem()
            broken = comparison.display_name(1)
            assert problem is not None and problem.startswith(f"{broken} did not answer")
            with pytest.raises(PodlabError, match="did not answer"):
                comparison.vote(0)
            assert store.votes() == []

    async def test_a_blind_round_starts_from_empty_histories(
        self, servers: tuple[FaultServer, FaultServer]
    ) -> None:
        a, b = servers
        panes = [Pane(a.url, "echo"), Pane(b.url, "echo")]
        comparison = Comparison(panes)
        await collect(comparison, "named round", "parallel")
        assert len(panes[0].history) == 2
        comparison.blind = True
        _events, result = await collect(comparison, "blind round", "parallel")
        assert result.panes[0].text == "echo: blind round | messages=1"
        assert [m["content"] for m in panes[0].history] == ["blind round", result.panes[0].text]

    async def test_prompt_set(self, servers: tuple[FaultServer, FaultServer]) -> None:
        a, b = servers
        comparison = Comparison([Pane(a.url, "echo"), Pane(b.url, "normal")])
        seen: list[tuple[int, str]] = []

        def on_event(index: int, event: object) -> None:
            if isinstance(event, RoundDone):
                seen.append((index, event.result.prompt))

        outcome = await comparison.run_prompt_set(["p1", "p2", "p3"], "per-server", on_event)
        assert seen == [(0, "p1"), (1, "p2"), (2, "p3")]
        assert [r.panes[0].text for r in outcome.rounds] == [
            "echo: p1 | messages=1",
            "echo: p2 | messages=1",  # prompts of a set do not share history
            "echo: p3 | messages=1",
        ]
        table = outcome.table()
        assert len(table) == 6 and {row["state"] for row in table} == {"complete"}
        summary = outcome.summary()
        assert [s["complete"] for s in summary] == [3, 3]
        markdown = outcome.to_markdown()
        assert "# Prompt set" in markdown and "## 3. p3" in markdown
        assert json.loads(json.dumps(outcome.to_dict()))["rounds"][1]["prompt"] == "p2"

    async def test_closing_the_iterator_cancels_every_pane_quickly(
        self, servers: tuple[FaultServer, FaultServer]
    ) -> None:
        a, b = servers
        panes = [Pane(a.url, "stall?after=2"), Pane(b.url, "stall?after=2")]
        comparison = Comparison(panes)
        stream = comparison.run("hi", "parallel")
        tokens = 0
        async for event in stream:
            if isinstance(event, PaneEvent) and isinstance(event.event, Token):
                tokens += 1
                if tokens == 4:
                    break
        closed_at = time.monotonic()
        await stream.aclose()
        assert time.monotonic() - closed_at < 0.2
        records = a.chat_requests() + b.chat_requests()
        for record in records:
            await asyncio.wait_for(record.ended.wait(), 1)
            assert record.disconnected is not None
            assert record.disconnected - closed_at < 0.2
        assert not comparison.running

    async def test_energy_per_pane_in_sequential_mode(
        self, servers: tuple[FaultServer, FaultServer], tmp_path: Path
    ) -> None:
        make_powercap(tmp_path, {"intel-rapl:0": ("package-0", 0, 10**12)})
        a, b = servers
        meter = EnergyMeter(powercap_root=tmp_path, use_nvidia=False)
        comparison = Comparison([Pane(a.url, "normal"), Pane(b.url, "normal")], energy=meter)
        _events, sequential = await collect(comparison, "hi", "sequential")
        assert all(p.energy_j == 0.0 for p in sequential.panes)
        assert sequential.energy_j == 0.0
        _events, parallel = await collect(comparison, "hi", "parallel")
        assert all(p.energy_j is None for p in parallel.panes)  # shared: not per pane
        assert parallel.energy_j == 0.0

    async def test_tokens_per_joule_where_energy_per_answer_is_measured(
        self, servers: tuple[FaultServer, FaultServer], tmp_path: Path
    ) -> None:
        make_powercap(tmp_path, {"intel-rapl:0": ("package-0", 0, 10**12)})
        a, b = servers
        meter = EnergyMeter(powercap_root=tmp_path, use_nvidia=False)
        comparison = Comparison([Pane(a.url, slow("a")), Pane(b.url, slow("b"))], energy=meter)
        burning = asyncio.Event()

        async def burn() -> None:  # the package counter moves while the panes answer
            joules = 0
            while not burning.is_set():
                joules += 1
                staged = tmp_path / "energy_uj.new"  # replaced whole: never read half-written
                staged.write_text(f"{joules * 1_000_000}\n")
                staged.replace(tmp_path / "intel-rapl:0" / "energy_uj")
                await asyncio.sleep(0.01)

        burner = asyncio.create_task(burn())
        try:
            _events, result = await collect(comparison, "hi", "sequential")
        finally:
            burning.set()
            await burner
        for pane in result.panes:
            assert pane.ok and pane.metrics is not None and pane.energy_j
            expected = pane.metrics.tokens / pane.energy_j
            assert pane.tokens_per_j == pytest.approx(expected)
            assert pane.to_dict()["tokens_per_j"] == round(expected, 3)
        assert result.energy_j
        total = sum(p.metrics.tokens for p in result.panes if p.metrics is not None)
        assert result.to_dict()["tokens_per_j"] == round(total / result.energy_j, 3)
        assert "Tokens/J" in result.to_markdown()
        assert tokens_per_joule(10, 0.0) is None and tokens_per_joule(None, 2.0) is None
