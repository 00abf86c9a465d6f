"""Per-request cost of the shim against the bare SDK, on an ``httpx2.MockTransport`` (no network).

Bare and instrumented batches alternate round by round (``uninstrument()`` / ``instrument()`` between
them), so machine drift hits both alike; each figure is the median over the rounds. Targets: at most
10 us added per non-streaming request, at most 2% on a 50-event stream.

With ``--multiprocess`` each round also runs the shim in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
set to a temporary directory at ``instrument()``, every update written through prometheus_client's
mmap files), so the two modes are compared in the same run.

    python benchmarks/overhead.py [--rounds 25] [--requests 1200] [--multiprocess]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import anthropic
import claude_exporter
import httpx2
from prometheus_client import CollectorRegistry

MODEL = "claude-sonnet-5-5"
MESSAGE = {
    "id": "msg_bench",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "Hello."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 34, "cache_read_input_tokens": 5},
}


def _sse(events: list[tuple[str, dict[str, object]]]) -> bytes:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def stream_body(n_events: int = 50) -> bytes:
    """message_start, a text block with n-4 deltas, message_delta, message_stop: n events in all."""
    start = {**MESSAGE, "content": [], "stop_reason": None, "usage": {"input_tokens": 12, "output_tokens": 1}}
    deltas = n_events - 5
    text_block = {"type": "text", "text": ""}
    delta = {"type": "text_delta", "text": "tok "}
    end = {"stop_reason": "end_turn", "stop_sequence": None}
    events: list[tuple[str, dict[str, object]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": text_block}),
        *(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            for _ in range(deltas)
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": end, "usage": {"output_tokens": deltas}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert len(events) == n_events
    return _sse(events)


def make_client() -> anthropic.Anthropic:
    body_json = json.dumps(MESSAGE).encode()
    body_sse = stream_body()

    def handler(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content).get("stream"):
            return httpx2.Response(200, content=body_sse, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, content=body_json, headers={"content-type": "application/json"})

    http = anthropic.DefaultHttpxClient(transport=httpx2.MockTransport(handler))
    return anthropic.Anthropic(api_key="bench", http_client=http, max_retries=0)


def per_request_us(fn: Callable[[], object], n: int) -> float:
    gc.collect()  # each block starts from the same heap; collections inside it still count
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument(
        "--multiprocess", action="store_true", help="also measure multiprocess mode, in the same rounds"
    )
    args = parser.parse_args()
    mp_dir = tempfile.TemporaryDirectory(prefix="claude-exporter-bench-") if args.multiprocess else None

    def instrumented(multiprocess: bool) -> None:
        claude_exporter.uninstrument()
        if multiprocess and mp_dir is not None:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir.name  # read once, at instrument()
        try:
            claude_exporter.instrument(registry=CollectorRegistry())
        finally:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

    client = make_client()
    kwargs = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}

    def plain() -> object:
        return client.messages.create(**kwargs)  # type: ignore[call-overload]

    def streamed() -> object:
        return sum(1 for _ in client.messages.create(stream=True, **kwargs))  # type: ignore[call-overload]

    results: dict[str, dict[str, list[float]]] = {"non-streaming": {}, "50-event stream": {}}
    for name, fn, n in (
        ("non-streaming", plain, args.requests),
        ("50-event stream", streamed, args.requests // 4),
    ):
        runs: dict[str, list[float]] = {"bare": [], "shim": [], "multiprocess": []}
        for round_ in range(2 + args.rounds):  # two warm-up rounds, discarded: caches settle first
            claude_exporter.uninstrument()
            bare = per_request_us(fn, n)
            instrumented(multiprocess=False)
            shim = per_request_us(fn, n)
            multi = None
            if args.multiprocess:
                instrumented(multiprocess=True)
                multi = per_request_us(fn, n)
            if round_ >= 2:
                runs["bare"].append(bare)
                runs["shim"].append(shim)
                if multi is not None:
                    runs["multiprocess"].append(multi)
        claude_exporter.uninstrument()
        results[name] = runs

    print(f"{'case':<18}{'mode':<14}{'bare us':>10}{'shim us':>10}{'added us':>10}{'ratio':>9}")
    for name, runs in results.items():
        bare_us = statistics.median(runs["bare"])
        for mode in ("shim", "multiprocess"):
            if not runs[mode]:
                continue
            # Median of per-round differences: each ran right after its bare batch, so drift cancels.
            added = statistics.median(s - b for s, b in zip(runs[mode], runs["bare"], strict=True))
            label = "single" if mode == "shim" else mode
            ratio = 1 + added / bare_us
            print(f"{name:<18}{label:<14}{bare_us:>10.1f}{bare_us + added:>10.1f}{added:>10.1f}{ratio:>9.3f}")
    if mp_dir is not None:
        mp_dir.cleanup()


if __name__ == "__main__":
    main()
