"""What a Claude Code fleet costs the exporter: OTLP log batches decoded and applied, per record.

A batch holds what one ``claude -p`` turn of Claude Code 2.1.328 exports (user_prompt, 3 api_request,
2 tool_result, assistant_response, 2 events the mapping skips), ``--sessions`` sessions of it. The WSGI
route is called directly (no sockets), protobuf and JSON alternating round by round; each figure is the
median over the rounds. Also: the memory the deduplication state holds per remembered id.

    python benchmarks/otlp_ingest.py [--rounds 15] [--sessions 50]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import claude_exporter
from claude_exporter.config import default_config
from claude_exporter.ingest.otlp_counting import Recent
from claude_exporter.server import default_routes
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from otlp_payloads import api_request, as_json, event, logs_request, resource

RECORDS_PER_SESSION = 9


def session_records(n: int, run: int) -> list[dict[str, Any]]:
    s, p = f"s{run}-{n}", f"p{run}-{n}"
    ids = {"prompt.id": p}
    return [
        event("plugin_loaded", s, **{"plugin.name": "x"}),
        event("user_prompt", s, **ids, prompt="<REDACTED>"),
        *(api_request(f"req-{run}-{n}-{i}", session=s, prompt=p) for i in range(3)),
        *(
            event("tool_result", s, **ids, tool_name="Bash", tool_use_id=f"t{run}-{n}-{i}", success="true")
            for i in range(2)
        ),
        event("assistant_response", s, **ids, model="claude-sonnet-4-5"),
        event("tool_decision", s, **ids, decision="accept", tool_name="Bash"),
    ]


def call(route: Any, body: bytes, content_type: str) -> str:
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": content_type,
        "wsgi.input": io.BytesIO(body),
    }
    status: list[str] = []
    b"".join(route(environ, lambda s, h: status.append(s)))
    return status[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--sessions", type=int, default=50
    )  # 450 records: a full 512-record batch is the most
    args = parser.parse_args()
    # The default configuration: the event log goes to its logger, which nobody listens to here.
    claude_exporter.instrument(config=default_config(), registry=CollectorRegistry())
    route = default_routes(otlp=True)["/v1/logs"]
    per_record: dict[str, list[float]] = {"protobuf": [], "json": []}
    for run in range(args.rounds):
        for kind in ("protobuf", "json"):
            records = [
                r for n in range(args.sessions) for r in session_records(n, run * 2 + (kind == "json"))
            ]
            body = logs_request(records, resource("bench"))
            content_type = "application/x-protobuf"
            if kind == "json":
                body, content_type = as_json("logs", body), "application/json"
            start = time.perf_counter()
            assert call(route, body, content_type).startswith("200")
            per_record[kind].append((time.perf_counter() - start) / len(records))
    claude_exporter.uninstrument()

    tracemalloc.start()
    recent = Recent(capacity=200_000)
    before = tracemalloc.get_traced_memory()[0]
    for i in range(100_000):
        recent.add(("req", f"req_{i:024x}"))
    per_id = (tracemalloc.get_traced_memory()[0] - before) / 100_000
    tracemalloc.stop()

    size = args.sessions * RECORDS_PER_SESSION
    print(f"batches of {size} records ({args.sessions} sessions), median of {args.rounds} rounds:")
    for kind, times in per_record.items():
        median = statistics.median(times)
        print(f"  {kind:9s} {median * 1e6:7.1f} us/record  ({1 / median:,.0f} records/s on one core)")
    ratio = statistics.median(per_record["json"]) / statistics.median(per_record["protobuf"])
    print(f"  json / protobuf: {ratio:.2f}x")
    print(f"deduplication memory: {per_id:.0f} bytes per remembered id (100000 ids)")
    print(json.dumps({k: statistics.median(v) for k, v in per_record.items()}))


if __name__ == "__main__":
    main()
