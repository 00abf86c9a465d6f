"""Instructions the shim adds per request, counted by valgrind (callgrind), so the figure does not depend
on what else the machine is doing.

Each configuration (bare SDK or instrumented; non-streaming or a 50-event stream) runs in its own process
under callgrind twice, with N and 2N requests after the same warm-up; the difference divided by N is the
marginal cost of one request, start-up and warm-up cancelled. The workload is ``overhead.py``'s (an
``httpx2.MockTransport``, no network).

    python benchmarks/instructions.py [--requests 300]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

WORKER = """
import sys
sys.path.insert(0, {here!r})
import overhead, claude_exporter
from prometheus_client import CollectorRegistry
mode, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = overhead.make_client()
kw = {{"model": overhead.MODEL, "max_tokens": 64, "messages": [{{"role": "user", "content": "hi"}}]}}
if mode == "shim":
    claude_exporter.instrument(registry=CollectorRegistry())
def one():
    if kind == "stream":
        return sum(1 for _ in client.messages.create(stream=True, **kw))
    return client.messages.create(**kw)
for _ in range(50):
    one()
for _ in range(n):
    one()
"""


def count(mode: str, kind: str, n: int, workdir: Path) -> int:
    out = workdir / f"callgrind.{mode}.{kind}.{n}"
    script = workdir / "worker.py"
    script.write_text(WORKER.format(here=str(HERE)))
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(script),
            mode,
            kind,
            str(n),
        ],
        check=True,
        capture_output=True,
    )
    summary = re.search(r"^summary: (\d+)", out.read_text(), re.M)
    assert summary is not None, f"no summary in {out}"
    return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    n = args.requests
    print(f"{'case':<18}{'bare Ir/req':>14}{'shim Ir/req':>14}{'added Ir':>12}{'added %':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for kind, name in (("plain", "non-streaming"), ("stream", "50-event stream")):
            per = {}
            for mode in ("bare", "shim"):
                per[mode] = (count(mode, kind, 2 * n, workdir) - count(mode, kind, n, workdir)) / n
            added = per["shim"] - per["bare"]
            share = 100 * added / per["bare"]
            print(f"{name:<18}{per['bare']:>14.0f}{per['shim']:>14.0f}{added:>12.0f}{share:>9.2f}%")


if __name__ == "__main__":
    main()
