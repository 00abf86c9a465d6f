"""The cost of one scrape, by the number of series the exporter holds: time and memory per series.

The series are built through the real recording path: ``instrument()`` with a configuration whose label
caps are raised out of the way, then one ``execution(task, agent=...)`` holding one request, on the real SDK
over an ``httpx2.MockTransport`` (overhead.py's method), for each (agent, task, model) until the target is
reached. The fleet is 20 agents on 5 models; tasks grow with the target. Each size runs in its own process.

Reported per size: series (sample lines of the text exposition); the median time of ``generate_latest``
(Prometheus text 0.0.4) in this process's CPU time (wall time beside it: on a shared machine it also holds
other processes' turns), and of the OpenMetrics rendering, per series; the memory the recorded series
retain (tracemalloc, from after the first execution to after the last, over the series added meanwhile);
the peak memory one scrape allocates on top of that; and, as a reference, prometheus_client's own
Histogram and Counter holding as many series.

``--fleets`` (e.g. ``20x3x5s,1000x2x3``: agents x models x tasks, ``s`` when every request streams, which
adds the time-to-first-token histograms) builds each fleet the same way, one execution of one request per
(agent, model, task), and times ``/metrics`` before and after the exposition writer in the same process:
prometheus_client's ``generate_latest`` and its ``make_wsgi_app`` (the path ``/metrics`` took before),
against the exporter's ``/metrics`` app, in the Prometheus text format and in OpenMetrics with gzip as
Prometheus asks for it; with gzip's time and size at levels 1, 6 and 9, the memory the writer's caches
keep, and a check that the writer's text is prometheus_client's byte for byte.

    python benchmarks/scrape.py [--sizes 1000,10000,50000] [--fleets 20x3x5s,1000x2x3] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

AGENTS = 20
MODELS = ("claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-sonnet-5-5", "claude-opus-5")
HERE = Path(__file__).resolve()
# What Prometheus 3 sends by default (its scrape_protocols): OpenMetrics 1.0.0 first, then the text formats.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


def _series(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def _client() -> Any:
    import anthropic
    import httpx2
    from overhead import MODEL, stream_body  # this script's directory is on sys.path

    # overhead.py's stream (8 events), naming the model asked for, as the API does.
    streams = {m: stream_body(8).replace(json.dumps(MODEL).encode(), json.dumps(m).encode()) for m in MODELS}

    def handler(request: httpx2.Request) -> httpx2.Response:
        asked = json.loads(request.content)
        model = asked["model"]
        if asked.get("stream"):
            return httpx2.Response(200, content=streams[model], headers={"content-type": "text/event-stream"})
        body = {
            "id": "msg_scrape",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "Hello."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 34, "cache_read_input_tokens": 5},
        }
        return httpx2.Response(200, json=body)

    http = anthropic.DefaultHttpxClient(transport=httpx2.MockTransport(handler))
    return anthropic.Anthropic(api_key="bench", http_client=http, max_retries=0)


def _median_seconds(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    """Median seconds of ``fn`` on CPU time (this process) and wall time, each call after a gc.collect()."""
    cpu, wall = [], []
    for _ in range(repeat):
        gc.collect()
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return {"cpu": statistics.median(cpu), "wall": statistics.median(wall)}


def _instrument(caps: int) -> Any:
    """``instrument()`` on a new registry, with every label cap at ``caps``; returns the registry."""
    import claude_exporter
    from prometheus_client import CollectorRegistry

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "scrape.yaml"
        config.write_text(
            "monitoring:\n  agent-00: {}\nexporter:\n  label_caps: {"
            f"agent: {caps}, task: {caps}, model: {caps}, combinations: {caps}"
            "}\n"
        )
        registry = CollectorRegistry()
        claude_exporter.instrument(config=str(config), registry=registry)
    return registry


def measure(target: int, repeat: int = 0) -> dict[str, Any]:
    """Build about ``target`` series in this process and measure a scrape of them."""
    import claude_exporter
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    registry = _instrument(10 * target)
    client = _client()

    def one(unit: int) -> None:
        agent, task, model = (
            f"agent-{unit % AGENTS:02d}",
            f"task-{unit // AGENTS:04d}",
            MODELS[(unit + unit // AGENTS) % 5],
        )
        with claude_exporter.execution(task, agent=agent):
            client.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}])

    # The first execution pays for imports and caches; memory is counted from after it.
    one(0)
    first = _series(generate_latest(registry))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    units, series = 1, first
    while series < target:
        # Grow in steps sized from the series one unit adds so far, then recount exactly.
        per_unit = max(1.0, (series - first) / max(1, units - 1)) if units > 1 else 50.0
        step = max(1, min(units, int((target - series) / per_unit)))
        for unit in range(units, units + step):
            one(unit)
        units += step
        series = _series(generate_latest(registry))
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    overflow = _overflowed(registry)
    repeat = repeat or max(5, min(50, 200_000 // series))
    text_s = _median_seconds(lambda: generate_latest(registry), repeat)
    om_s = _median_seconds(lambda: generate_openmetrics(registry), repeat)

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    payload = generate_latest(registry)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    claude_exporter.uninstrument()
    native_us, native_bytes = reference(series, repeat)
    return {
        "target": target,
        "series": series,
        "executions": units,
        "agents": min(units, AGENTS),
        "tasks": (units - 1) // AGENTS + 1,
        "overflowed": overflow,
        "repeat": repeat,
        "scrape_ms": text_s["cpu"] * 1e3,
        "us_per_series": text_s["cpu"] * 1e6 / series,
        "scrape_wall_ms": text_s["wall"] * 1e3,
        "openmetrics_us_per_series": om_s["cpu"] * 1e6 / series,
        "bytes_per_series": retained / max(1, series - first),
        "scrape_peak_bytes": peak,
        "payload_bytes": len(payload),
        "native_us_per_series": native_us,
        "native_bytes_per_series": native_bytes,
    }


def _overflowed(registry: Any) -> float:
    return sum(
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "claude_exporter_label_overflow_total"
    )


def _wsgi(app: Any, accept: str | None, gzipped: bool) -> bytes:
    """One GET of ``app`` (a /metrics WSGI app) in this process; the body as served."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""}
    if accept is not None:
        environ["HTTP_ACCEPT"] = accept
    if gzipped:
        environ["HTTP_ACCEPT_ENCODING"] = "gzip"
    return b"".join(app(environ, lambda status, headers: None))


def measure_fleet(spec: str, repeat: int = 0) -> dict[str, Any]:
    """Build the fleet ``spec`` (AGENTSxMODELSxTASKS, ``s``: streamed requests) in this process and time
    /metrics on it before and after the exposition writer."""
    import gzip

    import claude_exporter
    from claude_exporter.exposition.collectors import capturing
    from claude_exporter.exposition.endpoint import metrics_app
    from prometheus_client import generate_latest, make_wsgi_app

    stream = spec.endswith("s")
    agents, models, tasks = (int(n) for n in spec.rstrip("s").split("x"))
    if models > len(MODELS):
        sys.exit(f"scrape.py: at most {len(MODELS)} models")
    registry = _instrument(10 * agents * models * tasks + 100)
    client = _client()
    started = time.perf_counter()
    for agent in range(agents):
        for model in MODELS[:models]:
            for task in range(tasks):
                with claude_exporter.execution(f"task-{task:04d}", agent=f"agent-{agent:04d}"):
                    kwargs: dict[str, Any] = {"model": model, "max_tokens": 64, "stream": stream}
                    reply = client.messages.create(messages=[{"role": "user", "content": "hi"}], **kwargs)
                    if stream:
                        for _ in reply:
                            pass
    build_s = time.perf_counter() - started

    with capturing() as found:
        generate_latest(registry)
    [collector] = found
    old_text = generate_latest(registry)
    lines = _series(old_text)
    # The writer's caches: what the first scrape through it leaves behind (its text dropped).
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    collector.exposition(openmetrics=False)
    gc.collect()
    cached = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    identical = collector.exposition(openmetrics=False) == old_text and (
        collector.exposition(openmetrics=True) + b"# EOF\n" == _openmetrics(registry)
    )

    old_app, new_app = make_wsgi_app(registry), metrics_app(registry)
    repeat = repeat or max(3, min(30, 300_000 // lines))
    times = {
        "before_text": _median_seconds(lambda: generate_latest(registry), repeat),
        "before_metrics_text": _median_seconds(lambda: _wsgi(old_app, None, False), repeat),
        "before_metrics_om_gzip": _median_seconds(lambda: _wsgi(old_app, PROMETHEUS_ACCEPT, True), repeat),
        "after_metrics_text": _median_seconds(lambda: _wsgi(new_app, None, False), repeat),
        "after_metrics_om": _median_seconds(lambda: _wsgi(new_app, PROMETHEUS_ACCEPT, False), repeat),
        "after_metrics_om_gzip": _median_seconds(lambda: _wsgi(new_app, PROMETHEUS_ACCEPT, True), repeat),
        "after_generate_latest": _median_seconds(lambda: generate_latest(registry), repeat),
    }
    peaks = {}
    for name, scrape in (
        ("before", lambda: _wsgi(old_app, PROMETHEUS_ACCEPT, True)),
        ("after", lambda: _wsgi(new_app, PROMETHEUS_ACCEPT, True)),
    ):
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        scrape()
        peaks[name] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    om = _wsgi(new_app, PROMETHEUS_ACCEPT, False)
    levels = {}
    for level in (1, 6, 9):
        seconds = _median_seconds(lambda level=level: gzip.compress(om, compresslevel=level), repeat)
        levels[str(level)] = {
            "ms": seconds["cpu"] * 1e3,
            "bytes": len(gzip.compress(om, compresslevel=level)),
        }
    gzipped = _wsgi(new_app, PROMETHEUS_ACCEPT, True)
    overflow = _overflowed(registry)
    claude_exporter.uninstrument()
    return {
        "fleet": spec,
        "agents": agents,
        "models": models,
        "tasks": tasks,
        "streamed": stream,
        "executions": agents * models * tasks,
        "build_s": build_s,
        "lines": lines,
        "text_bytes": len(old_text),
        "openmetrics_bytes": len(om),
        "gzip_bytes": len(gzipped),
        "identical": identical,
        "overflowed": overflow,
        "repeat": repeat,
        "ms": {name: t["cpu"] * 1e3 for name, t in times.items()},
        "wall_ms": {name: t["wall"] * 1e3 for name, t in times.items()},
        "cache_bytes": cached,
        "scrape_peak_bytes": peaks,
        "gzip_levels": levels,
    }


def _openmetrics(registry: Any) -> bytes:
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    return bytes(generate_openmetrics(registry))


def reference(series: int, repeat: int) -> tuple[float, float]:
    """prometheus_client's own families holding about as many series: its time and memory per series.

    Per agent, a duration histogram of the same buckets and a counter of four token types, as the request
    families are shaped. The floor a collector that renders through prometheus_client can approach.
    """
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    registry = CollectorRegistry()
    buckets = [0.01 * 2**i for i in range(14)] + [120, 300, 600]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    duration = Histogram("ref_duration_seconds", "h", ["agent", "model"], buckets=buckets, registry=registry)
    tokens = Counter("ref_tokens", "c", ["agent", "model", "type"], registry=registry)
    for agent in range(
        -(-series // 29)
    ):  # 29 lines each: 18 buckets, sum, count, created; 4 x (total, created)
        duration.labels(f"agent-{agent}", MODELS[0]).observe(1.0)
        for kind in ("input", "output", "cache_creation", "cache_read"):
            tokens.labels(f"agent-{agent}", MODELS[0], kind).inc(3)
    lines = _series(generate_latest(registry))
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    seconds = _median_seconds(lambda: generate_latest(registry), repeat)
    return seconds["cpu"] * 1e6 / lines, retained / lines


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(result: dict[str, Any]) -> str:
    head = ["series", "executions (agents x tasks)", "scrape, CPU", "per series", "scrape, wall"]
    head += ["OpenMetrics, per series", "memory per series", "peak during a scrape", "payload"]
    head += ["prometheus_client's own, per series", "its memory per series"]
    lines = []
    if result["sizes"]:
        lines = ["| " + " | ".join(head) + " |", "|---:|---|" + "---:|" * (len(head) - 2)]
    for r in result["sizes"]:
        cells = [
            f"{r['series']:,}",
            f"{r['executions']:,} ({r['agents']} x {r['tasks']})",
            f"{r['scrape_ms']:.1f} ms",
            f"{r['us_per_series']:.2f} us",
            f"{r['scrape_wall_ms']:.1f} ms",
            f"{r['openmetrics_us_per_series']:.2f} us",
            f"{r['bytes_per_series']:.0f} B",
            f"{r['scrape_peak_bytes'] / 2**20:.1f} MiB",
            f"{r['payload_bytes'] / 2**20:.1f} MiB",
            f"{r['native_us_per_series']:.2f} us",
            f"{r['native_bytes_per_series']:.0f} B",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if result["fleets"]:
        lines += [*([""] if lines else []), fleet_markdown(result["fleets"])]
    m = result["machine"]
    lines += [
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, {m['date']}; load average "
        f"{m['loadavg_start'][0]:.2f} at the start, {m['loadavg_end'][0]:.2f} at the end. Versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items())
        + ".",
    ]
    return "\n".join(lines)


def fleet_markdown(fleets: list[dict[str, Any]]) -> str:
    """Before and after, per fleet: CPU time of one scrape (median), the ratio, and memory."""
    head = ["fleet (agents x models x tasks)", "lines", "text / OpenMetrics / gzip"]
    head += ["text: before -> after", "OpenMetrics + gzip: before -> after", "after, OpenMetrics alone"]
    head += ["peak memory of a scrape: before -> after", "writer's caches"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in fleets:
        ms, peak = r["ms"], r["scrape_peak_bytes"]
        text = (ms["before_metrics_text"], ms["after_metrics_text"])
        om = (ms["before_metrics_om_gzip"], ms["after_metrics_om_gzip"])
        cells = [
            _fleet(r) + (", streamed" if r["streamed"] else ""),
            f"{r['lines']:,}",
            f"{_size(r['text_bytes'])} / {_size(r['openmetrics_bytes'])} / {_size(r['gzip_bytes'])}",
            f"{_ms(text[0])} -> **{_ms(text[1])}** ({text[0] / text[1]:.1f}x)",
            f"{_ms(om[0])} -> **{_ms(om[1])}** ({om[0] / om[1]:.1f}x)",
            _ms(ms["after_metrics_om"]),
            f"{_size(peak['before'])} -> {_size(peak['after'])}",
            f"{_size(r['cache_bytes'])} ({r['cache_bytes'] / r['lines']:.0f} B a line)",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| fleet | gzip level 1 (ours) | level 6 | level 9 (prometheus_client's) |",
        "|---|---:|---:|---:|",
    ]
    for r in fleets:
        levels = r["gzip_levels"]
        cells = [_fleet(r)] + [
            f"{levels[k]['ms']:.1f} ms, {_size(levels[k]['bytes'])}" for k in ("1", "6", "9")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fleet(r: dict[str, Any]) -> str:
    return f"{r['agents']:,} x {r['models']} x {r['tasks']}"


def _ms(value: float) -> str:
    return f"{value / 1e3:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _run_worker(flag: str, value: str, *more: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE), flag, value, *more], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.exit(f"scrape.py: the {value} worker failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", help="series counts (default 1000,10000,50000 unless --fleets is given)")
    parser.add_argument("--fleets", help="AGENTSxMODELSxTASKS[s],...: /metrics before and after the writer")
    parser.add_argument("--repeat", type=int, default=0, help="timed calls per figure (default: by size)")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fleet-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.repeat)))
        return
    if args.fleet_worker:
        print(json.dumps(measure_fleet(args.fleet_worker, args.repeat)))
        return
    if args.sizes is None and args.fleets is None:
        args.sizes = "1000,10000,50000"
    from importlib import metadata

    machine = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }
    sizes = [
        _run_worker("--worker", size, "--repeat", str(args.repeat))
        for size in (args.sizes.split(",") if args.sizes else [])
    ]
    fleets = [
        _run_worker("--fleet-worker", spec, "--repeat", str(args.repeat))
        for spec in (args.fleets.split(",") if args.fleets else [])
    ]
    machine["loadavg_end"] = os.getloadavg()
    versions = {p: metadata.version(p) for p in ("claude-exporter", "prometheus-client", "anthropic")}
    result = {"machine": machine, "versions": versions, "sizes": sizes, "fleets": fleets}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    bad = [r["series"] for r in sizes if r["overflowed"]] + [r["fleet"] for r in fleets if r["overflowed"]]
    if bad:
        sys.exit(f"scrape.py: label values overflowed at {bad}: raise the caps")
    different = [r["fleet"] for r in fleets if not r["identical"]]
    if different:
        sys.exit(f"scrape.py: the writer's text differs from prometheus_client's for {different}")


if __name__ == "__main__":
    main()
