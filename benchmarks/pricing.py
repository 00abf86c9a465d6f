"""What pricing one request costs: the recorder's cost call alone, in instructions (callgrind) and time.

Each case is a ``Usage`` as the SDK's response fills it, priced the way ``RequestLabels.cost`` prices it.
With ``--baseline REV`` the same cases also run through the package as it was at git revision ``REV``
(extracted with ``git archive``, each tree in its own process), so a change is measured before and after
in one run, and the results of the two trees are compared case by case (they must agree to 1e-12).

Instructions per call are counted by valgrind (callgrind) with N and 2N calls (N = ``--calls`` / 2) after
the same warm-up; the difference divided by N cancels start-up. The time is the best of ``--rounds``
rounds of ``--calls`` calls, three times over, the trees taking turns.

    python benchmarks/pricing.py [--baseline REV] [--cases NAME,...] [--calls 2000] [--rounds 15]
                                 [--no-callgrind]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, model, usage fields as the API reports them). The first is overhead.py's reply.
CASES: list[tuple[str, str, dict[str, object]]] = [
    ("common", "claude-sonnet-5-5", {"input_tokens": 12, "output_tokens": 34, "cache_read_input_tokens": 5}),
    (
        "long-context model",
        "claude-sonnet-4-5",
        {
            "input_tokens": 12,
            "output_tokens": 34,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "service_tier": "standard",
        },
    ),
    (
        "fast+us+batch",
        "claude-opus-5-5",
        {
            "input_tokens": 2000,
            "output_tokens": 1000,
            "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 20_000,
            "speed": "fast",
            "inference_geo": "us",
            "service_tier": "batch",
        },
    ),
    (
        "iterations+search",
        "claude-fable-5",
        {
            "input_tokens": 10_000,
            "output_tokens": 900,
            "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1},
            "iterations": [
                {
                    "type": "message",
                    "model": "claude-fable-5",
                    "input_tokens": 5000,
                    "output_tokens": 100,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 20_000,
                },
                {
                    "type": "fallback_message",
                    "model": "claude-opus-5",
                    "input_tokens": 5000,
                    "output_tokens": 800,
                    "cache_creation_input_tokens": 20_000,
                    "cache_read_input_tokens": 0,
                },
            ],
            "fallback_credit": {"status": {"type": "redeemed"}},
        },
    ),
]

# Runs in the tree under test (PYTHONPATH): builds the case's Usage and the cost call, then either
# prints the result, times N calls, or (under callgrind) makes N calls.
WORKER = """
import json, sys, time
from types import SimpleNamespace
from claude_exporter.recording import pricing
from claude_exporter.recording.usage import Usage

cases = json.loads(sys.argv[1])
what, n, rounds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
table = pricing.load_price_table()
lookup = table.lookup

if hasattr(pricing, "price_request"):
    price_request = pricing.price_request

    def call(price, usage):
        r = price_request(price, usage, lookup)
        return r.usd, r.unpriced, r.reason, r.savings
else:  # before the pricing package: settings.cost_function, driven as RequestLabels.cost drove it
    from claude_exporter.settings import cost_function

    cost, iterations_of = cost_function(table), pricing.iterations_of

    def call(price, usage):
        its = iterations_of(usage.iterations) if usage.iterations else ()
        if its:
            usage.input = sum(it.input for it in its)
            usage.output = sum(it.output for it in its)
            usage.cache_5m = sum(it.cache_write_5m for it in its)
            usage.cache_1h = sum(it.cache_write_1h for it in its)
            usage.cache_creation = usage.cache_5m + usage.cache_1h
            usage.cache_read = sum(it.cache_read for it in its)
        return cost(price, usage, its)

out = {}
for name, model, fields in cases:
    # Shaped as the SDK's usage (Usage reads attributes by name), without importing the SDK: valgrind
    # runs start faster. iterations and fallback_credit stay dicts, which pricing reads alike.
    nested = {k: SimpleNamespace(**v) for k, v in fields.items()
              if k in ("cache_creation", "server_tool_use")}
    usage = Usage()
    usage.update(SimpleNamespace(**{**fields, **nested}))
    price = lookup(model)
    for _ in range(200):  # warm-up: the specialising interpreter settles
        call(price, usage)
    if what == "result":
        out[name] = list(call(price, usage))
    elif what == "time":
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(n):
                call(price, usage)
            best = min(best, time.perf_counter() - start)
        out[name] = best / n * 1e9
    else:
        for _ in range(n):
            call(price, usage)
print(json.dumps(out))
"""


def _run(tree: Path, args: list[str], workdir: Path, valgrind_out: Path | None = None) -> str:
    script = workdir / "worker.py"
    script.write_text(WORKER)
    command = [sys.executable, str(script), *args]
    if valgrind_out is not None:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={valgrind_out}", *command]
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return done.stdout


def _instructions(tree: Path, case: tuple[str, str, dict[str, object]], n: int, workdir: Path) -> float:
    counts = []
    for calls in (n, 2 * n):
        out = workdir / f"callgrind.{calls}"
        _run(tree, [json.dumps([case]), "count", str(calls), "1"], workdir, out)
        summary = re.search(r"^summary: (\d+)", out.read_text(), re.M)
        assert summary is not None, f"no summary in {out}"
        counts.append(int(summary.group(1)))
    return (counts[1] - counts[0]) / n


def _extract(rev: str, workdir: Path) -> Path:
    """The ``exporter`` directory of ``rev``, extracted into ``workdir``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "exporter"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
    return workdir / "exporter"


def _same(a: list[object], b: list[object]) -> bool:
    return all(
        math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-15)
        if isinstance(x, float) and isinstance(y, float)
        else x == y
        for x, y in zip(a, b, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--baseline",
        help="a git revision (or another checkout's exporter/ directory) to measure beside this tree",
    )
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-callgrind", action="store_true", help="time only")
    args = parser.parse_args()
    callgrind = not args.no_callgrind and shutil.which("valgrind") is not None
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        trees = {"this tree": ROOT / "exporter"}
        if args.baseline:
            if Path(args.baseline).is_dir():
                trees = {args.baseline: Path(args.baseline).resolve(), **trees}
            else:
                base = workdir / "baseline"
                base.mkdir()
                trees = {args.baseline: _extract(args.baseline, base), **trees}
        cases = [c for c in CASES if not args.cases or c[0] in args.cases.split(",")]
        if not cases:
            parser.error(f"--cases: none of {args.cases!r}; the cases are {', '.join(c[0] for c in CASES)}")
        every = json.dumps(cases)
        results, times, instructions = {}, {}, {}
        for label, tree in trees.items():
            results[label] = json.loads(_run(tree, [every, "result", "1", "1"], workdir))
            if callgrind:
                instructions[label] = {c[0]: _instructions(tree, c, args.calls // 2, workdir) for c in cases}
        # The trees take turns, so a change in the machine's load falls on both; the best round counts.
        for _ in range(3):
            for label, tree in trees.items():
                got = json.loads(_run(tree, [every, "time", str(args.calls), str(args.rounds)], workdir))
                times[label] = {name: min(ns, times.get(label, {}).get(name, ns)) for name, ns in got.items()}
    labels = list(trees)
    head = f"{'case':<22}" + "".join(f"{label[:14] + ' ns':>18}" for label in labels)
    if callgrind:
        head += "".join(f"{label[:14] + ' Ir':>18}" for label in labels)
    print(head)
    for name, _, _ in cases:
        row = f"{name:<22}" + "".join(f"{times[label][name]:>18.0f}" for label in labels)
        if callgrind:
            row += "".join(f"{instructions[label][name]:>18.0f}" for label in labels)
        print(row)
    for name, _, _ in cases:
        print(f"{name}: {results[labels[-1]][name]}")
    if len(labels) == 2:
        before, after = results[labels[0]], results[labels[1]]
        differ = [name for name, _, _ in cases if not _same(before[name], after[name])]
        for name in differ:
            print(f"DIFFERENT: {name}: {before[name]} vs {after[name]}")
        if differ:
            sys.exit(1)
        print("results agree to 1e-12")


if __name__ == "__main__":
    main()
