"""Energy used while an answer streams, where the machine exposes it.

Two sources, summed when both are there:

- RAPL counters under `/sys/class/powercap/intel-rapl:*` (Intel and recent AMD CPUs): package
  zones plus their `dram` subzones (`psys` is skipped: it overlaps the packages). The counters
  wrap at `max_energy_range_uj`; one wrap per measurement is handled. Since Linux 5.10 the
  counters are readable by root only, so they are often "not available" for a normal user.
- NVIDIA GPUs through `nvidia-smi`: the `total_energy_consumption` counter (Volta and newer) when
  it is supported, otherwise `power.draw` sampled in a background thread and integrated.

The figures are machine-wide: they include everything else running. `EnergyMeter.start()` /
`stop()` return joules or None ("not available"; `reason` says why). Detection and nvidia-smi
calls block for tens of milliseconds: from asyncio use `astart()` / `astop()`.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = [
    "EnergyMeter",
    "EnergyReport",
    "Measurement",
    "NvidiaEnergy",
    "RaplEnergy",
    "Runner",
]

Runner = Callable[[Sequence[str]], str]
"""Runs a command and returns its stdout; raises OSError or CalledProcessError on failure."""

POWERCAP_ROOT = Path("/sys/class/powercap")


def run_command(args: Sequence[str]) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, timeout=5).stdout


@dataclass(frozen=True)
class EnergyReport:
    """One measurement: total joules (None when nothing could be measured) and per source."""

    joules: float | None
    seconds: float
    by_source: dict[str, float] = field(default_factory=dict)

    @property
    def average_watts(self) -> float | None:
        if self.joules is None or self.seconds <= 0:
            return None
        return self.joules / self.seconds


class _Source(Protocol):
    name: str

    def begin(self) -> object: ...

    def end(self, state: object) -> float | None: ...


# ---------------------------------------------------------------------------------------------
# RAPL


@dataclass(frozen=True)
class _Zone:
    name: str
    energy_file: Path
    max_range_uj: int


class RaplEnergy:
    """Cumulative RAPL counters; `probe()` returns None or the reason they cannot be used."""

    name = "rapl"

    def __init__(self, root: Path = POWERCAP_ROOT) -> None:
        self.root = root
        self.zones: list[_Zone] = []

    def probe(self) -> str | None:
        if not self.root.is_dir():
            return f"{self.root} does not exist (no powercap/RAPL on this machine)"
        zones: list[_Zone] = []
        for package in sorted(self.root.glob("intel-rapl:*")):
            if package.name.count(":") != 1:
                continue  # a subzone; taken with its package below
            name = _read_text(package / "name") or package.name
            if name == "psys":
                continue  # platform total overlapping the packages
            zones.append(_zone(package, name))
            for sub in sorted(package.glob(f"{package.name}:*")):
                sub_name = _read_text(sub / "name")
                if sub_name == "dram":
                    zones.append(_zone(sub, f"{name}/dram"))
        if not zones:
            return f"no RAPL zones under {self.root}"
        try:
            for zone in zones:
                int(zone.energy_file.read_text())
        except PermissionError:
            return (
                "RAPL energy counters are readable by root only on this system"
                " (Linux 5.10 and later)"
            )
        except (OSError, ValueError) as exc:
            return f"cannot read RAPL counters: {exc}"
        self.zones = zones
        return None

    def begin(self) -> object:
        return [self._read(zone) for zone in self.zones]

    def end(self, state: object) -> float | None:
        assert isinstance(state, list)
        total_uj = 0
        for zone, start in zip(self.zones, state, strict=True):
            now = self._read(zone)
            if start is None or now is None:
                return None
            delta = now - start
            if delta < 0:  # the counter wrapped
                delta += zone.max_range_uj
            total_uj += max(0, delta)
        return total_uj / 1_000_000.0

    @staticmethod
    def _read(zone: _Zone) -> int | None:
        try:
            return int(zone.energy_file.read_text())
        except (OSError, ValueError):
            return None


def _zone(path: Path, name: str) -> _Zone:
    max_text = _read_text(path / "max_energy_range_uj")
    try:
        max_range = int(max_text) if max_text else 0
    except ValueError:
        max_range = 0
    return _Zone(name, path / "energy_uj", max_range)


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# NVIDIA


def _numbers(output: str) -> list[float] | None:
    """Each line a number (one per GPU); None when any is missing ("[N/A]", "[Not Supported]")."""
    values: list[float] = []
    for line in output.splitlines():
        text = line.strip()
        if not text:
            continue
        try:
            values.append(float(text))
        except ValueError:
            return None
    return values or None


class NvidiaEnergy:
    """GPU energy from nvidia-smi: the energy counter, or sampled power integrated over time."""

    name = "nvidia"

    def __init__(
        self,
        runner: Runner | None = None,
        *,
        sample_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = runner or run_command
        self.sample_interval = sample_interval
        self.clock = clock
        self.mode: str | None = None  # "counter" or "sampling" after a successful probe

    def _query(self, field_name: str) -> list[float] | None:
        try:
            output = self.runner(
                ["nvidia-smi", f"--query-gpu={field_name}", "--format=csv,noheader,nounits"]
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return _numbers(output)

    def probe(self) -> str | None:
        if self.runner is run_command and shutil.which("nvidia-smi") is None:
            return "nvidia-smi not found"
        if self._query("total_energy_consumption") is not None:
            self.mode = "counter"
            return None
        if self._query("power.draw") is not None:
            self.mode = "sampling"
            return None
        return "nvidia-smi reports neither total_energy_consumption nor power.draw"

    def begin(self) -> object:
        if self.mode == "counter":
            return self._query("total_energy_consumption")
        return _PowerSampler(self).start()

    def end(self, state: object) -> float | None:
        if self.mode == "counter":
            after = self._query("total_energy_consumption")
            if not isinstance(state, list) or after is None or len(after) != len(state):
                return None
            return max(0.0, sum(after) - sum(state)) / 1000.0  # mJ → J
        assert isinstance(state, _PowerSampler)
        return state.stop()


class _PowerSampler:
    """Samples total GPU power in a thread; `stop()` returns the trapezoid integral in joules."""

    def __init__(self, source: NvidiaEnergy) -> None:
        self.source = source
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvidia-power", daemon=True)

    def start(self) -> _PowerSampler:
        self._sample()
        self._thread.start()
        return self

    def _sample(self) -> None:
        watts = self.source._query("power.draw")
        if watts is not None:
            self.samples.append((self.source.clock(), sum(watts)))

    def _run(self) -> None:
        while not self._stop.wait(self.source.sample_interval):
            self._sample()

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        if len(self.samples) < 2:
            return None
        joules = 0.0
        for (t0, w0), (t1, w1) in zip(self.samples, self.samples[1:], strict=False):
            joules += (w0 + w1) / 2.0 * max(0.0, t1 - t0)
        return joules


# ---------------------------------------------------------------------------------------------
# The meter


class Measurement:
    """One running measurement; several may run at once on one meter."""

    def __init__(self, sources: Sequence[_Source], clock: Callable[[], float]) -> None:
        self._clock = clock
        self._started = clock()
        self._states = [(source, source.begin()) for source in sources]

    def stop(self) -> EnergyReport:
        by_source: dict[str, float] = {}
        for source, state in self._states:
            value = source.end(state)
            if value is not None:
                by_source[source.name] = by_source.get(source.name, 0.0) + value
        seconds = self._clock() - self._started
        total = sum(by_source.values()) if by_source else None
        return EnergyReport(total, seconds, by_source)


def tokens_per_joule(tokens: int | None, joules: float | None) -> float | None:
    """Tokens generated per joule, the energy efficiency of an answer; None when either is
    unknown or no energy was measured (0 J: the counter did not move)."""
    if not tokens or joules is None or joules <= 0:
        return None
    return tokens / joules


class EnergyMeter:
    """Detects what this machine can measure, once, on first use.

    `root` and `nvidia_runner` are injectable for tests (a fake powercap tree, a fake
    nvidia-smi); `use_nvidia=False` skips the GPU.
    """

    def __init__(
        self,
        *,
        powercap_root: Path = POWERCAP_ROOT,
        nvidia_runner: Runner | None = None,
        use_rapl: bool = True,
        use_nvidia: bool = True,
        sample_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._candidates: list[RaplEnergy | NvidiaEnergy] = []
        if use_rapl:
            self._candidates.append(RaplEnergy(powercap_root))
        if use_nvidia:
            self._candidates.append(
                NvidiaEnergy(nvidia_runner, sample_interval=sample_interval, clock=clock)
            )
        self._clock = clock
        self._sources: list[RaplEnergy | NvidiaEnergy] | None = None
        self._reasons: list[str] = []
        self._lock = threading.Lock()
        self._current: Measurement | None = None
        self.last: EnergyReport | None = None

    def _detect(self) -> list[RaplEnergy | NvidiaEnergy]:
        with self._lock:
            if self._sources is None:
                sources = []
                for candidate in self._candidates:
                    problem = candidate.probe()
                    if problem is None:
                        sources.append(candidate)
                    else:
                        self._reasons.append(f"{candidate.name}: {problem}")
                self._sources = sources
            return self._sources

    @property
    def available(self) -> bool:
        return bool(self._detect())

    @property
    def sources(self) -> list[str]:
        names = []
        for source in self._detect():
            if isinstance(source, NvidiaEnergy):
                names.append(f"nvidia ({source.mode})")
            else:
                names.append("rapl (" + ", ".join(z.name for z in source.zones) + ")")
        return names

    @property
    def reason(self) -> str:
        """What is measured, or why energy is not available."""
        if self._detect():
            return "measuring " + " + ".join(self.sources)
        return "not available: " + ("; ".join(self._reasons) or "no energy source")

    def measure(self) -> Measurement | None:
        """Begin an independent measurement; None when nothing can be measured."""
        sources = self._detect()
        return Measurement(sources, self._clock) if sources else None

    def start(self) -> None:
        self._current = self.measure()

    def stop(self) -> float | None:
        """Joules since `start()`, or None when not available."""
        current, self._current = self._current, None
        if current is None:
            self.last = None
            return None
        self.last = current.stop()
        return self.last.joules

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> float | None:
        return await asyncio.to_thread(self.stop)
