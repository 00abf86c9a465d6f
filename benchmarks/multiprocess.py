"""What multiprocess mode adds per request: the recording path alone, both modes in the same run.

One request's recording as the wrappers drive it (a ``Call`` opened, then finished with usage and a stop
reason, counted as an execution of its own), in a single process (the in-memory store) and in
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set at ``instrument()``: every value also written to
this process's mmap files, in-flight and oldest-running gauges kept live). The modes alternate round by
round; the figures are the median and the minimum over rounds (the minimum is the least disturbed by
other load on the machine). ``overhead.py --multiprocess`` measures the whole request through the SDK.

    python benchmarks/multiprocess.py [--rounds 30] [--requests 5000]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from typing import Any

import claude_exporter
from claude_exporter.recording.call import Call
from claude_exporter.recording.usage import Usage
from prometheus_client import CollectorRegistry

MODEL = "claude-sonnet-4-5"


def per_request_us(multiprocess: bool, path: str, n: int) -> float:
    claude_exporter.uninstrument()
    if multiprocess:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # read once, at instrument()
    try:
        rec = claude_exporter.instrument(registry=CollectorRegistry())
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    try:
        return _measure(rec, n)
    finally:
        claude_exporter.uninstrument()


def _measure(rec: Any, n: int) -> float:
    labels = rec.request_labels("bench", MODEL)
    usage = Usage()
    usage.input, usage.output, usage.cache_read = 12, 34, 5
    Call(rec, labels, None, MODEL).finish(usage, "end_turn")  # first use: series and values created
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        Call(rec, labels, None, MODEL).finish(usage, "end_turn")
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"single": [], "multiprocess": []}
    with tempfile.TemporaryDirectory(prefix="claude-exporter-bench-") as path:
        for round_ in range(2 + args.rounds):  # two warm-up rounds, discarded
            single = per_request_us(False, path, args.requests)
            multi = per_request_us(True, path, args.requests)
            if round_ >= 2:
                runs["single"].append(single)
                runs["multiprocess"].append(multi)
    print(f"{'recording path':<16}{'median us':>11}{'min us':>9}")
    for mode, values in runs.items():
        print(f"{mode:<16}{statistics.median(values):>11.2f}{min(values):>9.2f}")
    ratio = statistics.median(m / s for m, s in zip(runs["multiprocess"], runs["single"], strict=True))
    print(f"multiprocess / single, median of per-round ratios: {ratio:.2f}")


if __name__ == "__main__":
    main()
