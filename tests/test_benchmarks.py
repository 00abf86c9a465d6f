"""The benchmarks' own checks, on tiny runs in the project's venv (no peers' venv, no figures asserted).

peers.py must flag a configuration that records nothing and report one that cannot start, rather than
time either silently; scrape.py must build the series it says it measures, without folding any, and
compare /metrics before and after the exposition writer on the same fleet.
instructions.py must count what it says under valgrind (segments, glibc malloc left out, as
callgrind_annotate sees it) and fail a run with a configuration that did not start or recorded nothing.
A worker that makes a request imports anthropic under valgrind, about a minute, so its short runs stop
before that (a configuration that cannot start) and the rest is checked on its own output and functions.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import repo_tool

pytestmark = pytest.mark.benchmark

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_peers_flags_silent_and_missing_configurations(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    run = _run(
        "peers.py", "--configs", "ours,passthrough,otel-metrics", "--rounds", "2", "--requests", "8",
        "--processes", "1", "--python", sys.executable, "--json", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["rows"]

    ours = rows["ours"]
    assert not ours["recorded_nothing"] and ours["error"] is None
    for case in ("non-streaming", "50-event stream"):
        # overhead.py's reply: 12 input + 34 output + 5 cache read; the stream: 12 input + 45 output.
        assert ours["recorded"][case]["metric measurements"] == 1
        assert ours["cases"][case]["tokens"] is True
    assert ours["recorded"]["non-streaming"]["metric tokens"] == 51
    assert ours["recorded"]["50-event stream"]["metric tokens"] == 57
    assert len(rows["bare"]["cases"]["non-streaming"]) > 0  # the baseline was timed

    silent = rows["passthrough"]
    assert silent["recorded_nothing"] is True
    assert "RECORDED NOTHING" in run.stdout and "**nothing**" in run.stdout
    assert "passthrough" in run.stderr.splitlines()[-1]

    otel = rows["otel-metrics"]
    if not _installed("opentelemetry.instrumentation.anthropic"):
        assert otel["error"] and "ModuleNotFoundError" in otel["error"]
        assert otel["cases"] == {}
        assert "did not start" in run.stdout


def test_scrape_builds_the_series_it_measures(tmp_path: Path) -> None:
    out = tmp_path / "scrape.json"
    run = _run("scrape.py", "--sizes", "300", "--repeat", "3", "--json", str(out))
    assert run.returncode == 0, run.stderr
    (size,) = json.loads(out.read_text())["sizes"]
    assert size["series"] >= 300
    assert size["overflowed"] == 0
    assert size["executions"] >= 2
    assert size["bytes_per_series"] > 0 and size["scrape_ms"] > 0


def test_scrape_fleets_time_both_paths_on_the_same_series(tmp_path: Path) -> None:
    out = tmp_path / "scrape.json"
    run = _run("scrape.py", "--fleets", "2x2x1s", "--repeat", "2", "--json", str(out))
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["sizes"] == []
    (fleet,) = result["fleets"]
    assert fleet["executions"] == 4 and fleet["streamed"] is True
    assert fleet["identical"] is True and fleet["overflowed"] == 0
    assert set(fleet["ms"]) >= {"before_metrics_om_gzip", "after_metrics_om_gzip", "after_metrics_text"}
    assert 0 < fleet["gzip_bytes"] < fleet["openmetrics_bytes"]
    assert "-> **" in run.stdout  # the before/after table


# ------------------------------------------------------------------------------------ instructions.py


def _instructions() -> Any:
    return repo_tool("benchmarks/instructions.py")


def test_instructions_counts_segments_and_leaves_glibc_malloc_out(tmp_path: Path) -> None:
    """The client requests, run under callgrind (valgrind missing fails this test), give one labelled dump
    per segment; the count scales with the work; glibc malloc is found as callgrind_annotate finds it."""
    script = tmp_path / "segments.py"
    script.write_text(
        textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(BENCH)!r})
            from instructions import Valgrind
            valgrind = Valgrind()
            assert valgrind.running(), "the client request did not reach valgrind"
            valgrind.request(Valgrind.START_INSTRUMENTATION)
            def python(n):  # small ints: Python's own allocator, never glibc's
                return sum(i * i for i in range(n))
            def blocks(n):  # 4 KiB each: over pymalloc's 512 bytes, so glibc malloc and free
                for _ in range(n):
                    bytearray(4096)
            segments = (("python-1", python, 5000), ("python-2", python, 10000), ("blocks", blocks, 2000))
            for label, work, n in segments:
                valgrind.request(Valgrind.ZERO_STATS)
                work(n)
                valgrind.dump(label)
        """)
    )
    out = tmp_path / "callgrind.out"
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         f"--log-file={tmp_path / 'valgrind.log'}", sys.executable, str(script)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr + (tmp_path / "valgrind.log").read_text()[-2000:]
    instructions = _instructions()
    dumps = {d.label: d for d in map(instructions.read_dump, sorted(tmp_path.glob("callgrind.out.*")))}
    assert set(dumps) == {"python-1", "python-2", "blocks"}
    one, two, blocks = dumps["python-1"], dumps["python-2"], dumps["blocks"]
    assert 1.9 < two.counted / one.counted < 2.1  # twice the work, twice the instructions
    assert one.malloc < one.instructions / 100 and two.malloc < two.instructions / 100
    per_block = blocks.malloc / 2000  # a malloc and a free per block
    assert 40 < per_block < 2000, per_block

    # The same figure as valgrind's own tool: the inclusive cost of the allocator's entry points.
    annotate = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(tmp_path / "callgrind.out.3")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    entries = ("malloc", "free", "realloc", "calloc", "posix_memalign", "memalign", "aligned_alloc")
    listed = [
        int(m.group(1).replace(",", ""))
        for m in re.finditer(r"^\s*([\d,]+) .*:(\w+) \[.*libc[.]so", annotate.stdout, re.M)
        if m.group(2) in entries
    ]
    assert listed and sum(listed) == blocks.malloc


def test_instructions_fails_a_run_with_a_configuration_that_did_not_start(tmp_path: Path) -> None:
    """openlit is never in the project's venv: its worker starts under valgrind, finds it missing before
    the SDK's import, and the run says so and exits 1 instead of leaving the row out."""
    assert not _installed("openlit"), (
        "openlit is in the project's venv: pick a configuration that cannot start"
    )
    out = tmp_path / "instructions.json"
    run = _run(
        "instructions.py", "--configs", "openlit", "--requests", "2", "--streams", "1", "--json", str(out)
    )
    assert run.returncode == 1, run.stdout + run.stderr
    result = json.loads(out.read_text())
    row = result["rows"]["openlit"]
    assert row["flagged"] and not row["started"] and row["error"].startswith("not installed: openlit")
    assert row["cases"] == {}
    assert "did not start: not installed: openlit" in run.stdout
    assert "openlit" in run.stderr.splitlines()[-1]
    assert {t["verdict"] for t in result["targets"]} == {"not measured"}


def _mode(recorded: dict[str, float], plain: int, stream: int) -> dict[str, Any]:
    """One configuration in a worker's report: two rounds of each case at these instructions per request
    (one more in the second round, and glibc malloc on top, which is left out)."""
    return {
        "versions": {},
        "recorded": {case: recorded for case in ("non-streaming", "50-event stream")},
        "segments": {
            "non-streaming": [
                {"round": r, "instructions": (plain + r) * 10 + 50, "malloc": 50} for r in (0, 1)
            ],
            "50-event stream": [
                {"round": r, "instructions": (stream + r) * 5 + 70, "malloc": 70} for r in (0, 1)
            ],
        },
    }


def test_instructions_flags_silence_and_judges_the_targets(tmp_path: Path) -> None:
    """Figures and verdicts from workers' reports (10 requests, 5 streams a segment, two rounds): one that
    should record and recorded nothing is flagged; the pass-through, silent by design, is not. Each peer
    is paired with the bare SDK of its own process."""
    instructions = _instructions()
    tokens = {"metric measurements": 1.0, "metric tokens": 51.0}
    shared = {
        "bare": _mode({}, 4_000_000, 10_000_000),
        "ours": _mode(tokens, 4_020_000, 10_050_000),  # +20K, +50K: within 25K and 60K
        "ours-mp": _mode(tokens, 4_050_000, 10_090_000),  # 2.5x and 1.8x ours
        "passthrough": _mode({}, 4_005_000, 10_004_000),
    }
    base = _mode({}, 4_100_000, 10_100_000)  # the peers' processes: another layout, another bare figure
    peers = {
        "otel-metrics": _mode({"metric measurements": 3.0}, 4_200_000, 10_250_000),  # 5x, 3x: no tokens
        "sdk-spans": _mode({"spans": 1.0, "span tokens": 51.0}, 4_400_000, 11_100_000),  # 15x, 20x
        "openlit": _mode({}, 7_000_000, 20_000_000),  # recorded nothing
    }
    processes = [{"modes": shared}, *({"modes": {"bare": base, name: mode}} for name, mode in peers.items())]
    names = [*shared, *peers]
    rows = instructions.summarise(processes, names, 10, 5)
    assert rows["ours"]["cases"]["non-streaming"]["added"] == 20_000
    assert rows["ours"]["cases"]["non-streaming"]["added_noise"] == 0  # the rounds differ alike
    assert rows["bare"]["cases"]["non-streaming"]["per_request"] == 4_000_000.5  # the shared process's
    assert rows["sdk-spans"]["cases"]["non-streaming"]["ratio_to_ours"] == 15
    assert [name for name, row in rows.items() if row["flagged"]] == ["openlit"]
    machine = {"python": "3", "valgrind": "3", "cpu": "cpu", "date": "today", "commit": "c", "minutes": 1.0}
    result = {"machine": machine, "requests": 10, "streams": 5, "rounds": 2, "layouts": 1, "jobs": 2}
    result["rows"] = rows
    result["targets"] = instructions.targets(rows)
    verdicts = [(t["target"], t["verdict"]) for t in result["targets"]]
    assert [v for _, v in verdicts] == [
        "pass",
        "pass",
        "missed",
        "pass",
        "pass",
        "missed",
        "missed",
        "missed",
    ]
    assert "sdk-spans" in verdicts[6][0] and "sdk-spans" in verdicts[7][0]  # otel-metrics records no tokens
    text = instructions.text(result)
    assert "(RECORDED NOTHING)" in text and text.count("RECORDED NOTHING") == 1

    doc = tmp_path / "benchmarks.md"
    marks = [
        f"{instructions.MARK.format(part=p)}\nold\n{instructions.END.format(part=p)}"
        for p in ("ours", "peers")
    ]
    doc.write_text(f"# Benchmarks\n\n{marks[0]}\n\nprose\n\n{marks[1]}\n")
    assert instructions.write_doc(result, doc) == ["ours", "peers"]
    written = doc.read_text()
    assert "old" not in written and "prose" in written and written.count("| bare SDK |") == 2
    ours_part = written.split("prose")[0]
    assert "openlit" not in ours_part and "4x cheaper" not in ours_part
