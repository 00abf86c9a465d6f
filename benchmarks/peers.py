"""This shim beside its peers: the cost each adds to the same SDK workload, one process per configuration.

The workload is overhead.py's (imported from it): the real anthropic SDK on an ``httpx2.MockTransport``, a
non-streaming request and a 50-event stream, batches timed after a ``gc.collect()``. Each configuration
lives in its own worker process, so one's patches, providers and garbage never reach another. A round
times one batch per configuration, in a new random order each round; a figure is the median over rounds
of (configuration - bare SDK) within the round, so drift and the other load on the machine hit all alike.
Each block is read on two clocks: wall time, overhead.py's figure, and the worker's CPU time (all its
threads), which leaves out the time other processes held the CPU: on a shared machine, most of the noise.

Before timing, every worker makes one request and one stream and reports what its configuration recorded
(metric measurements, spans, log records, and whether token counts were among them). A configuration that
recorded nothing is flagged in the table rather than silently timed; one that cannot start (a peer not
installed) is reported with its error.

OpenTelemetry configurations are set up as a user would, with global providers, but export to counting
exporters behind the usual batch processors (no network); metrics go to an ``InMemoryMetricReader``. A
global tracer provider also turns on the SDK's own spans, so every configuration with one includes them.

    make bench-peers      # makes benchmarks/.venv-peers from benchmarks/peers-requirements.txt, then runs
    benchmarks/.venv-peers/bin/python benchmarks/peers.py [--rounds 25] [--requests 1200] [--json FILE]
    python benchmarks/peers.py --quick --configs bare,ours,passthrough   # seconds; no peers needed
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
CASES = ("non-streaming", "50-event stream")
CLOCKS = ("wall", "cpu")


@dataclass(frozen=True)
class Config:
    name: str
    title: str
    packages: tuple[str, ...]  # distributions whose versions the table prints
    baseline: bool = False


CONFIGS = {
    c.name: c
    for c in (
        Config("bare", "bare SDK", ("anthropic", "httpx2", "pydantic"), baseline=True),
        # The bare SDK again, in a process of its own: how far two identical processes differ, that is
        # the method's resolution in this run (memory layout, scheduling, the machine's other load).
        Config("bare-2", "control: the bare SDK in another process", ()),
        Config("ours", "claude-exporter `instrument()`", ("claude-exporter", "prometheus-client")),
        # Not in the default set (instructions.py measures it): PROMETHEUS_MULTIPROC_DIR set at instrument().
        Config(
            "ours-mp",
            "claude-exporter `instrument()`, multiprocess mode",
            ("claude-exporter", "prometheus-client"),
        ),
        Config(
            "otel-metrics",
            "OTel instrumentation-anthropic, MeterProvider only",
            ("opentelemetry-instrumentation-anthropic", "opentelemetry-sdk"),
        ),
        Config(
            "otel-traces",
            "OTel instrumentation-anthropic, MeterProvider + TracerProvider",
            ("opentelemetry-instrumentation-anthropic", "opentelemetry-sdk"),
        ),
        Config("sdk-spans", "the SDK's own OTel spans (TracerProvider only)", ("opentelemetry-sdk",)),
        Config("openlit", "openlit `init()`, offline", ("openlit", "opentelemetry-sdk")),
        # Not in the default set: a wrapt wrapper around Messages.create that records nothing. The floor of
        # any patching shim, and the check that a silent configuration is flagged.
        Config("passthrough", "pass-through wrapt wrapper (records nothing)", ("wrapt",)),
    )
}
DEFAULT_CONFIGS = ("bare", "bare-2", "ours", "otel-metrics", "otel-traces", "sdk-spans", "openlit")

# --------------------------------------------------------------------------------------------- worker side


@dataclass
class Evidence:
    """What a configuration has recorded so far, from every sink it writes to."""

    probes: list[Callable[[], dict[str, float]]] = field(default_factory=list)

    def snapshot(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for probe in self.probes:
            for key, value in probe().items():
                total[key] = total.get(key, 0.0) + value
        return total


def _counting_span_processor() -> tuple[Any, Callable[[], dict[str, float]]]:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    seen = {"spans": 0.0, "span tokens": 0.0}

    class Counting(SpanExporter):
        def export(self, spans: Any) -> Any:
            for span in spans:
                seen["spans"] += 1
                for key, value in (span.attributes or {}).items():
                    if key.startswith("gen_ai.usage.") and "tokens" in key and isinstance(value, int | float):
                        seen["span tokens"] += value
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    processor = BatchSpanProcessor(Counting())

    def probe() -> dict[str, float]:
        processor.force_flush()
        return dict(seen)

    return processor, probe


def _counting_log_processor() -> tuple[Any, Callable[[], dict[str, float]]]:
    from opentelemetry.sdk._logs.export import (
        BatchLogRecordProcessor,
        LogRecordExporter,
        LogRecordExportResult,
    )

    seen = {"log records": 0.0}

    class Counting(LogRecordExporter):
        def export(self, batch: Any) -> Any:
            seen["log records"] += len(batch)
            return LogRecordExportResult.SUCCESS

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

        def shutdown(self) -> None:
            pass

    processor = BatchLogRecordProcessor(Counting())

    def probe() -> dict[str, float]:
        processor.force_flush()
        return dict(seen)

    return processor, probe


def _meter_provider() -> tuple[Any, Callable[[], dict[str, float]]]:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)

    def probe() -> dict[str, float]:
        seen = {"metric measurements": 0.0, "metric tokens": 0.0}
        data = reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        count = getattr(point, "count", None)  # histograms count, sums carry a value
                        value = getattr(point, "sum", None) if count is not None else point.value
                        seen["metric measurements"] += count if count is not None else value
                        if "token" in metric.name and "usage" in metric.name:  # not time-per-token
                            seen["metric tokens"] += value or 0
        return seen

    return provider, probe


def _tracer_provider() -> tuple[Any, Callable[[], dict[str, float]]]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    processor, probe = _counting_span_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider, probe


def _logger_provider() -> Callable[[], dict[str, float]]:
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider

    processor, probe = _counting_log_processor()
    provider = LoggerProvider()
    provider.add_log_record_processor(processor)
    _logs.set_logger_provider(provider)
    return probe


def _registry_probe(registry: Any) -> Callable[[], dict[str, float]]:
    def probe() -> dict[str, float]:
        seen = {"metric measurements": 0.0, "metric tokens": 0.0}
        for family in registry.collect():
            for sample in family.samples:
                if sample.name == "claude_requests_total":
                    seen["metric measurements"] += sample.value
                elif sample.name == "claude_tokens_total":
                    seen["metric tokens"] += sample.value
        return seen

    return probe


def set_up(name: str, workdir: Path) -> Evidence:
    """Install configuration ``name`` in this process, as its users would; return how to read its output."""
    evidence = Evidence()
    if name in ("bare", "bare-2"):
        pass
    elif name in ("ours", "ours-mp"):
        import claude_exporter
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
        if name == "ours-mp":
            (workdir / "multiproc").mkdir()
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "multiproc")  # read once, at instrument()
        try:
            claude_exporter.instrument(registry=registry)
        finally:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        evidence.probes.append(_registry_probe(registry))  # in multiprocess mode, read back from the files
    elif name in ("otel-metrics", "otel-traces"):
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

        meters, probe = _meter_provider()
        evidence.probes.append(probe)
        kwargs: dict[str, Any] = {"meter_provider": meters}
        if name == "otel-traces":
            kwargs["tracer_provider"], probe = _tracer_provider()
            evidence.probes.append(probe)
        AnthropicInstrumentor().instrument(**kwargs)
    elif name == "sdk-spans":
        evidence.probes.append(_tracer_provider()[1])
    elif name == "openlit":
        # openlit reuses SDK providers that exist; without them it would print every span to stdout.
        evidence.probes += [_tracer_provider()[1], _meter_provider()[1], _logger_provider()]
        # A local price file: by default openlit fetches one from the internet at init.
        prices = workdir / "openlit-pricing.json"
        model_price = {"promptPrice": 0.003, "completionPrice": 0.015, "cacheReadPrice": 0.0003}
        from overhead import MODEL

        prices.write_text(json.dumps({"chat": {MODEL: model_price}}))
        import openlit

        openlit.init(pricing_json=str(prices))  # otherwise its defaults, as a user gets them
    elif name == "passthrough":
        import wrapt

        wrapt.wrap_function_wrapper(
            "anthropic.resources.messages", "Messages.create", lambda wrapped, _i, a, k: wrapped(*a, **k)
        )
    else:
        raise ValueError(f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}")
    return evidence


def _versions(packages: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}


def per_request_us(fn: Callable[[], object], n: int) -> dict[str, float]:
    """overhead.py's timed block, read on two clocks.

    Wall time is overhead.py's figure. This process's CPU time (every thread: a batch span processor's
    too) leaves out the time other processes held the CPU, which on a shared machine is most of the noise.
    """
    gc.collect()  # each block starts from the same heap; collections inside it still count
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return {"wall": (time.perf_counter() - wall) / n * 1e6, "cpu": (time.process_time() - cpu) / n * 1e6}


def worker(name: str, requests: int, proto: IO[str]) -> None:
    """Set up ``name``, report what one request and one stream record, then time batches on command."""

    def send(message: dict[str, Any]) -> None:
        proto.write(json.dumps(message) + "\n")
        proto.flush()

    with tempfile.TemporaryDirectory() as tmp:
        try:
            evidence = set_up(name, Path(tmp))  # first: a missing peer fails before the SDK's import
        except Exception as exc:  # a peer missing or broken: say so, time nothing
            send({"error": f"{type(exc).__name__}: {exc}", "versions": _versions(CONFIGS[name].packages)})
            return
        from overhead import MODEL as model
        from overhead import make_client

        client = make_client()
        kwargs = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}

        def plain() -> object:
            return client.messages.create(**kwargs)  # type: ignore[call-overload]

        def streamed() -> object:
            return sum(1 for _ in client.messages.create(stream=True, **kwargs))  # type: ignore[call-overload]

        cases = {"non-streaming": (plain, requests), "50-event stream": (streamed, max(1, requests // 4))}
        recorded = {}
        for case, (fn, _) in cases.items():
            before = evidence.snapshot()
            fn()
            recorded[case] = _delta(evidence.snapshot(), before)
        for fn, n in cases.values():  # warm-up, discarded, as overhead.py does
            for _ in range(2):
                per_request_us(fn, n)
        send({"ready": True, "recorded": recorded, "versions": _versions(CONFIGS[name].packages)})
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "time":
                fn, n = cases[command["case"]]
                send(per_request_us(fn, n))
            else:
                break
        send({"recorded_total": evidence.snapshot()})


# ----------------------------------------------------------------------------------------- orchestrator


@dataclass
class Worker:
    config: Config
    process: subprocess.Popen[str] | None = None
    stderr: IO[str] | None = None
    hello: dict[str, Any] = field(default_factory=dict)
    times: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {clock: {case: [] for case in CASES} for clock in CLOCKS}
    )

    def ask(self, message: dict[str, Any] | None) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin and self.process.stdout
        if message is not None:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.config.name}: worker exited\n{self.stderr_text()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def stderr_text(self) -> str:
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        return self.stderr.read()[-4000:]

    @property
    def usable(self) -> bool:
        return bool(self.hello.get("ready"))

    def recorded_nothing(self) -> bool:
        if self.config.name == "bare-2":
            return False  # the control records nothing by design
        recorded = self.hello.get("recorded", {})
        return not any(v > 0 for case in recorded.values() for v in case.values())

    def records_tokens(self, case: str) -> bool:
        recorded = self.hello.get("recorded", {}).get(case, {})
        return any(v > 0 for k, v in recorded.items() if "tokens" in k)


@contextmanager
def workers(configs: list[Config], python: str, requests: int, processes: int) -> Iterator[list[Worker]]:
    started = [Worker(config) for config in configs for _ in range(processes)]
    try:
        for w in started:  # one at a time, so set-up and warm-up of one do not slow another's
            w.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
            w.process = subprocess.Popen(
                [
                    python,
                    str(Path(__file__).resolve()),
                    "--worker",
                    w.config.name,
                    "--requests",
                    str(requests),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=w.stderr,
                text=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            w.hello = w.ask(None)
        yield started
    finally:
        for w in started:
            if w.process is None:
                continue
            if w.process.poll() is None and w.usable:
                with suppress(RuntimeError, BrokenPipeError, ValueError):
                    w.hello["recorded_total"] = w.ask({"cmd": "exit"}).get("recorded_total", {})
            if w.process.stdin:
                w.process.stdin.close()
            try:
                w.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait()
            if w.stderr:
                w.stderr.close()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def summarise(ws: list[Worker]) -> dict[str, Any]:
    """Median per-round differences against the bare SDK, per case, and each configuration's evidence."""
    base = next(w for w in ws if w.config.baseline)
    rows: dict[str, Any] = {}
    for w in ws:
        row: dict[str, Any] = {
            "title": w.config.title,
            "versions": w.hello.get("versions", {}),
            "error": w.hello.get("error"),
            "recorded": w.hello.get("recorded", {}),
            "recorded_total": w.hello.get("recorded_total", {}),
            "recorded_nothing": w.usable and not w.config.baseline and w.recorded_nothing(),
            "cases": {},
        }
        for case in CASES if w.usable else ():
            row["cases"][case] = {"tokens": w.records_tokens(case)}
            for clock in CLOCKS:
                mine, bare = w.times[clock][case], base.times[clock][case]
                diffs = [t - b for t, b in zip(mine, bare, strict=True)]
                q = statistics.quantiles(diffs, n=4) if len(diffs) >= 2 else [diffs[0]] * 3
                row["cases"][case][clock] = {
                    "us": statistics.median(mine),
                    "bare_us": statistics.median(bare),
                    "added_us": statistics.median(diffs),
                    "added_pct": 100 * statistics.median(diffs) / statistics.median(bare),
                    "iqr_us": [q[0], q[2]],
                }
        rows[w.config.name] = row
    ours = rows.get("ours", {}).get("cases", {})
    for row in rows.values():
        for case, figures in row["cases"].items():
            for clock in CLOCKS:
                mine = ours.get(case, {}).get(clock, {}).get("added_us")
                f = figures[clock]
                f["ratio_to_ours"] = f["added_us"] / mine if mine and mine > 0 else None
    return rows


def _recorded_text(row: dict[str, Any], case: str) -> str:
    """What one request (or stream) recorded: metrics, spans (how many), log records; +tokens if counted."""
    recorded = row["recorded"].get(case, {})
    parts = []
    if recorded.get("metric measurements", 0) > 0:
        parts.append("metrics" + (" +tokens" if recorded.get("metric tokens", 0) > 0 else ""))
    if recorded.get("spans", 0) > 0:
        spans = recorded["spans"]
        tokens = " +tokens" if recorded.get("span tokens", 0) > 0 else ""
        parts.append(f"{spans:g} span{'s' if spans != 1 else ''}{tokens}")
    if recorded.get("log records", 0) > 0:
        parts.append(f"{recorded['log records']:g} log record(s)")
    return ", ".join(parts) or "**nothing**"


def goals(rows: dict[str, Any], case: str, clock: str = "cpu") -> list[str]:
    """The issue's goals for this case: 4x under OTel metrics-only, 35x under every peer recording tokens.

    When ours is not above the control's difference (two bare processes), its ratio means nothing; the
    line then says what ours would have to cost for the goal to hold.
    """

    def added(name: str) -> float | None:
        f = rows.get(name, {}).get("cases", {}).get(case)
        return None if f is None else float(f[clock]["added_us"])

    ours, control = added("ours"), added("bare-2")
    floor = abs(control) if control is not None else 0.0
    resolved = ours is not None and ours > floor

    def verdict(label: str, peer: float, goal: float) -> str:
        if resolved:
            assert ours is not None
            met = "met" if peer / ours >= goal else "NOT met"
            return f"{label}: {peer:.1f} us / ours {ours:.1f} us = {peer / ours:.1f}x (goal {goal:g}x: {met})"
        within = f"within the control's {floor:.1f} us" if control is not None else "not above zero"
        return (
            f"{label}: {peer:.1f} us; ours ({ours:.1f} us) is {within}, so the ratio is not measured: "
            f"the goal {goal:g}x holds if ours costs under {peer / goal:.1f} us"
        )

    out = []
    otel = added("otel-metrics")
    if otel is not None:
        out.append(verdict("OTel metrics-only", otel, 4))
    token_peers = {
        name: added(name)
        for name, row in rows.items()
        if name not in ("bare", "bare-2", "ours", "ours-mp") and row["cases"].get(case, {}).get("tokens")
    }
    known = {name: a for name, a in token_peers.items() if a is not None}
    if known and ours is not None:
        cheapest = min(known, key=lambda name: known[name])
        out.append(verdict(f"cheapest peer that records tokens ({cheapest})", known[cheapest], 35))
    return out


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def markdown(result: dict[str, Any]) -> str:
    """One table per case; CPU time first (robust to the machine's other load), wall time beside it."""
    rows = result["rows"]
    lines = []
    head = ["configuration", "added us, CPU", "added %", "ratio to ours", "IQR of added us", "added us, wall"]
    head += ["ratio to ours, wall", "recorded"]
    for case in CASES:
        bare = rows["bare"]["cases"][case]
        unit = "request" if case == "non-streaming" else "stream"
        lines += [
            f"**{case}** (bare SDK: {bare['cpu']['us']:.0f} us CPU, {bare['wall']['us']:.0f} us wall, "
            f"per {unit})",
            "",
            "| " + " | ".join(head) + " |",
            "|---|" + "---:|" * (len(head) - 2) + "---|",
        ]
        for name, row in rows.items():
            if name == "bare":
                continue
            f = row["cases"].get(case)
            if f is None:
                cells = [row["title"], *["-"] * (len(head) - 2), f"did not start: {row['error']}"]
            else:
                cpu, wall = f["cpu"], f["wall"]
                cells = [
                    row["title"] + (" (RECORDED NOTHING)" if row["recorded_nothing"] else ""),
                    f"{cpu['added_us']:.1f}",
                    f"{cpu['added_pct']:.1f}%",
                    _ratio(cpu["ratio_to_ours"]),
                    f"{cpu['iqr_us'][0]:.1f} .. {cpu['iqr_us'][1]:.1f}",
                    f"{wall['added_us']:.1f}",
                    _ratio(wall["ratio_to_ours"]),
                    _recorded_text(row, case),
                ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", *(f"- {line}" for line in goals(rows, case)), ""]
    versions: dict[str, str] = {}
    for row in rows.values():
        versions.update(row["versions"])
    m = result["machine"]
    lines += [
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, {m['date']}; load average "
        f"{m['loadavg_start'][0]:.2f} at the start, {m['loadavg_end'][0]:.2f} at the end. "
        f"{result['rounds']} rounds of {result['requests']} requests / {max(1, result['requests'] // 4)} "
        f"streams per configuration, taking turns among {result['processes']} processes per configuration.",
    ]
    return "\n".join(lines)


def run(
    configs: list[Config], python: str, rounds: int, requests: int, processes: int, seed: int | None
) -> dict[str, Any]:
    """Time every configuration in shuffled rounds; round r uses each configuration's process r mod K.

    Two processes of the same code differ by a few percent (memory layout, which core, what runs
    beside them); taking turns among K processes per configuration averages that out of the medians.
    """
    rng = random.Random(seed)
    info = machine()
    with workers(configs, python, requests, processes) as ws:
        groups: dict[str, list[Worker]] = {}
        for w in ws:
            groups.setdefault(w.config.name, []).append(w)
        leads = [group[0] for group in groups.values()]  # each group's times are kept on its first
        usable = [name for name, group in groups.items() if all(w.usable for w in group)]
        for r in range(rounds):
            for case in CASES:
                order = usable[:]
                rng.shuffle(order)
                for name in order:
                    group = groups[name]
                    block = group[r % len(group)].ask({"cmd": "time", "case": case})
                    for clock in CLOCKS:
                        group[0].times[clock][case].append(float(block[clock]))
        for name, group in groups.items():
            if name not in usable and group[0].usable:  # a later process of the group failed
                group[0].hello = next(w.hello for w in group if not w.usable)
    info["loadavg_end"] = os.getloadavg()
    result = {"machine": info, "rounds": rounds, "requests": requests, "processes": processes}
    return {**result, "rows": summarise(leads)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument(
        "--requests", type=int, default=1200, help="non-streaming requests per batch (/4 streams)"
    )
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"of: {', '.join(CONFIGS)}")
    parser.add_argument(
        "--python", help="interpreter for the workers (default: benchmarks/.venv-peers, if made)"
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds of 40 requests: checks, not figures")
    parser.add_argument("--processes", type=int, default=3, help="worker processes per configuration")
    parser.add_argument("--seed", type=int, help="seed of the round order")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.processes = 3, 40, 1
    if args.worker:
        # The protocol has the real stdout; anything a library prints goes to stderr instead.
        proto = os.fdopen(os.dup(sys.stdout.fileno()), "w")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        worker(args.worker, args.requests, proto)
        return
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    if "bare" not in names:
        names.insert(0, "bare")
    python = args.python or (str(PEERS_PYTHON) if PEERS_PYTHON.exists() else sys.executable)
    result = run([CONFIGS[n] for n in names], python, args.rounds, args.requests, args.processes, args.seed)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    flagged = [n for n, r in result["rows"].items() if r["recorded_nothing"] or r["error"]]
    if flagged:
        print(f"\nflagged (recorded nothing or did not start): {', '.join(flagged)}", file=sys.stderr)


if __name__ == "__main__":
    main()
