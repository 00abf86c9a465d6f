"""Series per agent and model, counted from a real scrape, for setting a cardinality budget.

Drives the real SDK against the fake API with every outcome the families distinguish (success, two
error types, streaming, a 429 retried, stop reasons, code-execution results, rate-limit headers) for
``--agents`` agents x ``--models`` models x ``--tasks`` tasks, scrapes ``/metrics`` once and counts the
series of each family, split into what grows per (agent, model), per (agent, task), and per process.

    python benchmarks/series.py [--agents 2] [--models 2] [--tasks 2] [--timeouts 1]
    python benchmarks/series.py --fleet 10,100,1000   # scrape size and time of one exporter holding a fleet

``--fleet`` fills one exporter (as ``serve`` ingesting a whole fleet would be) with N agents x 2 models x
3 tasks through the ingestion path, label caps raised to fit, and times ``generate_latest`` (median of 5).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections import Counter
from typing import Any

import anthropic
import claude_exporter
from claude_exporter.testing import FakeAnthropic, Reply, code_execution_blocks
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "claude-sonnet-4-0")
RESET = "2030-01-01T00:00:00Z"
LIMITS = {r: (1000, 900, RESET) for r in ("requests", "tokens", "input_tokens", "output_tokens")}


def _replies() -> list[Reply]:
    """One request's worth of every distinct outcome."""
    return [
        Reply(ratelimit=LIMITS),
        Reply(stop_reason="max_tokens"),
        Reply(stop_reason="tool_use"),
        Reply(content=code_execution_blocks("success", "bash_code_execution")),
        Reply(content=code_execution_blocks("nonzero_exit", "bash_code_execution")),
        Reply(content=code_execution_blocks("tool_error", "code_execution")),
        Reply(status=429, retry_after=0.001),
        Reply(),  # the retried request's success
        Reply(status=500),
        Reply(status=400),
    ]


def drive(client: anthropic.Anthropic, fake: FakeAnthropic, agent: str, model: str, task: str) -> None:
    kw: dict[str, Any] = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}
    fake.script(*_replies())
    with claude_exporter.execution(task, agent=agent):
        for _ in range(6):
            client.messages.create(**kw)
        client.messages.create(**kw)  # 429 then success
        for _ in range(2):
            with contextlib.suppress(anthropic.APIError):
                client.with_options(max_retries=0).messages.create(**kw)
    with claude_exporter.execution(task, agent=agent), client.messages.stream(**kw) as stream:
        stream.get_final_message()


def count(agents: int, models: int, tasks: int, timeouts: int) -> Counter[str]:
    registry = CollectorRegistry()
    alerts = [{"name": "execution_timeout", "threshold_ms": 1234 + i} for i in range(timeouts)]
    config = {"monitoring": {f"agent-{i}": {"alerts": alerts[i : i + 1]} for i in range(agents)}}
    import yaml
    from claude_exporter.config import parse_config

    claude_exporter.instrument(config=parse_config(yaml.safe_load(yaml.safe_dump(config))), registry=registry)
    try:
        with FakeAnthropic() as fake:
            client = fake.client(max_retries=1)
            for a in range(agents):
                for m in range(models):
                    for t in range(tasks):
                        drive(client, fake, f"agent-{a}", MODELS[m], f"task-{t}")
        text = generate_latest(registry).decode()
    finally:
        claude_exporter.uninstrument()
    series: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("claude_"):
            series[family.name] += len(family.samples)
    return series


def fleet(agents: int, models: int = 2, tasks: int = 3) -> tuple[int, int, float]:
    """(series, bytes, median ms) of one scrape of an exporter holding ``agents`` x models x tasks."""
    from claude_exporter.config import parse_config
    from claude_exporter.ingest.events import apply_events, parse_event

    registry = CollectorRegistry()
    caps = {"agent": agents + 1, "task": tasks + 1, "model": models + 1, "combinations": agents * 8 + 10}
    config = parse_config(
        {
            "monitoring": {"agent-0": {"sampling_rate": 0.0}},
            "exporter": {"label_caps": caps, "event_log": {"destination": "stderr"}},
        }
    )
    rec = claude_exporter.instrument(config=config, registry=registry)
    try:
        events = []
        for a in range(agents):
            for m in range(models):
                for t in range(tasks):
                    for ok in (True, False):
                        obj = {
                            "event": "claude_execution_complete" if ok else "claude_execution_error",
                            "agent": f"agent-{a}",
                            "model": MODELS[m],
                            "task": f"task-{t}",
                            "duration_ms": 1500,
                            "input_tokens": 1000,
                            "output_tokens": 200,
                            "stop_reason": "end_turn" if ok else None,
                            "error_type": None if ok else "InternalServerError",
                        }
                        event = parse_event(obj)
                        assert not isinstance(event, list), event
                        events.append(event)
        apply_events(rec, events)
        text = generate_latest(registry)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            generate_latest(registry)
            times.append((time.perf_counter() - start) * 1000)
        series = sum(
            len(f.samples)
            for f in text_string_to_metric_families(text.decode())
            if f.name.startswith("claude_")
        )
        return series, len(text), statistics.median(times)
    finally:
        claude_exporter.uninstrument()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--timeouts", type=int, default=1, help="distinct execution-timeout thresholds")
    parser.add_argument("--fleet", default=None, help="comma-separated agent counts to time a scrape at")
    args = parser.parse_args()
    if args.fleet:
        print(f"{'agents':>8}{'series':>10}{'bytes':>12}{'scrape ms':>11}")
        for n in (int(x) for x in args.fleet.split(",")):
            series, size, ms = fleet(n)
            print(f"{n:>8}{series:>10}{size:>12}{ms:>11.1f}")
        return
    one = count(1, 1, 1, args.timeouts)
    more = count(args.agents, args.models, args.tasks, args.timeouts)
    print(f"{'family':<52}{'1x1x1':>8}{f'{args.agents}x{args.models}x{args.tasks}':>10}")
    for name in sorted(set(one) | set(more)):
        print(f"{name:<52}{one[name]:>8}{more[name]:>10}")
    print(f"{'total':<52}{sum(one.values()):>8}{sum(more.values()):>10}")


if __name__ == "__main__":
    main()
