"""What a hostile configuration file under the 1 MiB cap costs ``load_config`` before it is refused: CPU
time, wall time and peak resident memory, each file in a fresh process (issue 18, row 13).

The files: a flow list of half a million integers, a block list of a quarter million, a sexagesimal
integer of 200,000 parts, 5,000 levels of flow nesting, and a large fleet that loads (150 agents with eight
alerts each). With ``--baseline REV`` the same files also go through the package as it was at git revision
``REV`` (extracted with ``git archive``), so one run measures before and after.

    python benchmarks/config_hostile.py [--baseline REV] [--timeout 120]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAP = 1 << 20

_ALERTS = "".join(
    f"      - {{name: {name}, severity: high, for: 5m}}\n"
    for name in ("execution_timeout", "token_spike", "error_rate", "latency_drift", "rate_limited",
                 "code_execution_failures", "truncated_responses", "spend_limit")
)  # fmt: skip

FILES: dict[str, str] = {
    "flow list, 500k integers": "monitoring: [" + "1," * ((CAP - 16) // 2) + "1]\n",
    "block list, 250k integers": "monitoring:\n" + "- 1\n" * ((CAP - 12) // 4),
    "sexagesimal, 200k parts": "monitoring:\n  a:\n    retention_days: 1" + ":5" * 200_000 + "\n",
    "5,000-deep nesting": "monitoring: " + "[" * 5000 + "]" * 5000 + "\n",
    "fleet of 150 agents (loads)": "monitoring:\n"
    + "".join(f"  agent_{i}:\n    sampling_rate: 0.5\n    alerts:\n" + _ALERTS for i in range(150)),
}

_PROBE = """
import json, resource, sys, time
from claude_exporter.config import ConfigError, load_config
wall, cpu = time.perf_counter(), time.process_time()
try:
    load_config(sys.argv[1])
    outcome = "loaded"
except ConfigError as err:
    outcome = "ConfigError: " + err.problems[0][:100]
except BaseException as err:
    outcome = type(err).__name__ + ": " + str(err)[:100]
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "outcome": outcome}))
"""


def measure(package: Path, path: Path, timeout: float) -> dict[str, object]:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path)],
            capture_output=True, text=True, timeout=timeout, check=False,
            env={"PYTHONPATH": str(package), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"outcome": f"over {timeout:g} s"}
    if done.returncode != 0:
        return {"outcome": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    return dict(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", metavar="REV", help="also measure the package at this git revision")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT / "exporter"}
        if args.baseline:
            base = Path(tmp) / "baseline"
            base.mkdir()
            archive = subprocess.run(
                ["git", "archive", args.baseline, "exporter"], cwd=ROOT, capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
            trees = {args.baseline: base / "exporter", **trees}
        print("| file | tree | CPU s | wall s | peak RSS MB | outcome |\n|---|---|---|---|---|---|")
        for name, text in FILES.items():
            path = Path(tmp) / "c.yaml"
            path.write_text(text)
            for tree, package in trees.items():
                r = measure(package, path, args.timeout)
                cpu, wall, rss = (
                    f"{float(str(r[k])):.2f}" if k in r else "-" for k in ("cpu", "wall", "rss_mb")
                )
                print(f"| {name} | {tree} | {cpu} | {wall} | {rss} | {str(r['outcome'])[:70]} |", flush=True)


if __name__ == "__main__":
    main()
