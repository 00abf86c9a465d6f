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

    python benchmarks/scrape.py [--sizes 1000,10000,50000] [--json FILE]
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


def _series(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def _client() -> Any:
    import anthropic
    import httpx2

    def handler(request: httpx2.Request) -> httpx2.Response:
        model = json.loads(request.content)["model"]
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


def measure(target: int) -> dict[str, Any]:
    """Build about ``target`` series in this process and measure a scrape of them."""
    import claude_exporter
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "scrape.yaml"
        big = 10 * target
        config.write_text(
            "monitoring:\n  agent-00: {}\nexporter:\n  label_caps: {"
            f"agent: {big}, task: {big}, model: {big}, combinations: {big}"
            "}\n"
        )
        registry = CollectorRegistry()
        claude_exporter.instrument(config=str(config), registry=registry)
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

    overflow = sum(
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "claude_exporter_label_overflow_total"
    )
    repeat = max(5, min(50, 200_000 // series))
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
    m = result["machine"]
    lines += [
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, {m['date']}; load average "
        f"{m['loadavg_start'][0]:.2f} at the start, {m['loadavg_end'][0]:.2f} at the end. Versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items())
        + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker)))
        return
    from importlib import metadata

    machine = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }
    sizes = []
    for size in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, str(HERE), "--worker", str(size)], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            sys.exit(f"scrape.py: the {size}-series worker failed:\n{out.stderr[-4000:]}")
        sizes.append(json.loads(out.stdout.splitlines()[-1]))
    machine["loadavg_end"] = os.getloadavg()
    versions = {p: metadata.version(p) for p in ("claude-exporter", "prometheus-client", "anthropic")}
    result = {"machine": machine, "versions": versions, "sizes": sizes}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    bad = [r["series"] for r in sizes if r["overflowed"]]
    if bad:
        sys.exit(f"scrape.py: label values overflowed at {bad} series: raise the caps")


if __name__ == "__main__":
    main()
