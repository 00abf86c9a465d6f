"""`make sdk-suite`: the Anthropic SDK's own tests, bare and with ``claude_exporter.instrument()`` on.

For each anthropic version (by default ``floor locked newest``: the oldest release pyproject.toml allows,
the one the lock pins and the newest on the index, see ``versions.py``), in a cache under
``.sdk-suite/anthropic-<version>/`` that survives between runs (versions not run are pruned from it):

1. a venv of its own, made by uv, with that anthropic (and its aiohttp/bedrock/vertex extras),
   claude-exporter editable from this checkout, and the SDK's pinned test dependencies (its sdist's
   requirements-dev.lock); installed once, again only when one of those inputs changes;
2. the version's sdist, unpacked, with ``src/`` moved aside so the installed package is the one tested;
3. its tests run twice with xdist: bare, then with ``shim_plugin`` (instrument at session start);
4. the two runs compared by node id. Exit status 1 if any test fails only with the shim on (or the
   shim run recorded no request at all, which would make it prove nothing); tests failing in both runs
   are the environment's and are listed without failing the target.

Run by the project's venv: its uv makes the venvs (hard links into uv's cache, so a venv costs little
disk); the sdist comes from the index's JSON API. While pytest runs, a line every 30 s says how far it got.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Comparison", "Outcomes", "compare", "main", "outcomes"]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from versions import KEYWORDS, REPO, resolve_all  # noqa: E402 (a sibling script, not a package)

CACHE = REPO / ".sdk-suite"
UV = Path(sys.executable).parent / "uv"
PYPI = "https://pypi.org/simple"
PROGRESS_EVERY = 30.0  # seconds between progress lines while pytest runs

# The selection the core v2 issue names, plus client copies (the shim patches `copy`/`with_options`) and
# the SDK's tracing helpers. Paths missing from a version are reported and skipped. tests/api_resources
# needs a Prism mock server, so it is left out.
SELECTION = (
    "tests/test_client.py",
    "tests/test_streaming.py",
    "tests/test_middleware.py",
    "tests/test_response.py",
    "tests/test_tracing.py",
    "tests/lib/streaming",
    "tests/lib/_parse",
    "tests/lib/tools",
    "tests/lib/test_bedrock.py",
    "tests/lib/test_vertex.py",
    "tests/lib/test_client_copy.py",
)
# `--wide` adds these: relevant, but together they double the run time (~1,900 tests, ~2 min of CPU).
WIDE = (
    "tests/test_open_telemetry.py",
    "tests/lib/threads",
    "tests/lib/test_refusal_fallback.py",
    "tests/lib/test_refusal_fallback_streaming.py",
)
EXTRAS = "aiohttp,bedrock,vertex"
# Development tools in the SDK's lock that its tests never import: skipping them saves install time.
NOT_FOR_TESTS = {"pyright", "nodeenv", "ruff"}
FAILED = {"failed", "xpassed"}


def log(message: str) -> None:
    print(f"sdk-suite: {message}", flush=True)


# ---- set-up (cached) -------------------------------------------------------------------------------


def _run(cmd: Sequence[str | Path], log_path: Path) -> None:
    """Run a set-up command with its output in `log_path` (pip is loud); show the tail if it fails."""
    with open(log_path, "a", encoding="utf-8") as out:
        code = subprocess.run(
            [str(c) for c in cmd], check=False, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    if code:
        tail = "\n".join(log_path.read_text(encoding="utf-8").splitlines()[-25:])
        raise SystemExit(f"sdk-suite: `{' '.join(map(str, cmd))}` failed ({code}):\n{tail}")


def download_sdist(version: str, archive: Path, index: str | None = None) -> None:
    """The sdist from the package index's JSON simple API (PEP 691), checked against the index's sha256.

    Not `pip download --no-binary`: that builds the sdist's metadata in an isolated environment first,
    which installs the SDK's build backend and takes a minute for a file of a few hundred kilobytes."""
    index = (index or os.environ.get("UV_INDEX_URL") or os.environ.get("PIP_INDEX_URL") or PYPI).rstrip("/")
    accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    with urllib.request.urlopen(
        urllib.request.Request(f"{index}/anthropic/", headers=accept), timeout=60
    ) as r:
        files = json.load(r)["files"]
    wanted = f"anthropic-{version}.tar.gz"
    found = [f for f in files if f["filename"] == wanted]
    if not found:
        raise SystemExit(f"sdk-suite: {index} has no {wanted}")
    digest = found[0]["hashes"].get("sha256")
    with urllib.request.urlopen(
        urllib.parse.urljoin(f"{index}/anthropic/", found[0]["url"]), timeout=120
    ) as r:
        body = r.read()
    if digest is None or hashlib.sha256(body).hexdigest() != digest:
        raise SystemExit(f"sdk-suite: {wanted} from {index} does not match the index's sha256")
    archive.write_bytes(body)


def sdist_tree(version: str, home: Path) -> Path:
    """The unpacked sdist with `src/` moved aside (so `import anthropic` finds the installed one)."""
    tree = home / f"anthropic-{version}"
    if (tree / "src.aside").is_dir():
        return tree
    downloads = home / "download"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / f"anthropic-{version}.tar.gz"
    if not archive.exists():
        download_sdist(version, archive)
    shutil.rmtree(tree, ignore_errors=True)
    with tarfile.open(archive) as tar:
        # The "data" filter (refuses links and paths out of `home`) exists from Python 3.10.12 / 3.11.4.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(home, filter="data")
        else:
            tar.extractall(home)
    if not (tree / "tests").is_dir():
        raise SystemExit(f"sdk-suite: the sdist of anthropic {version} has no tests/ ({tree})")
    (tree / "src").rename(tree / "src.aside")
    return tree


def test_requirements(tree: Path) -> list[str]:
    """The SDK's own pinned dev lock, minus itself and the tools its tests never import."""
    lock = tree / "requirements-dev.lock"
    if not lock.exists():
        raise SystemExit(f"sdk-suite: {lock} is missing; this version's test dependencies are unknown")
    wanted = []
    for raw in lock.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "-e")):
            continue
        name = re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0].lower()
        if name not in NOT_FOR_TESTS:
            wanted.append(line)
    return wanted


def _install_inputs(pyproject: Path) -> str:
    """The `[project...]` and `[tool.setuptools...]` tables: what an editable install without extras
    depends on. A change elsewhere (lint settings, the dev extra) needs no new venv."""
    tables = re.split(r"(?m)^(?=\[)", pyproject.read_text(encoding="utf-8"))
    install = ("[project]", "[project.", "[tool.setuptools")
    return "".join(
        table
        for table in tables
        if table.startswith(install) and not table.startswith("[project.optional-dependencies]")
    )


def venv(version: str, home: Path, tree: Path) -> tuple[Path, str]:
    """A venv for this version, (re)installed only when its inputs changed: (its python, inputs' digest)."""
    env = home / "venv"
    python = env / "bin" / "python"
    requirements = [f"anthropic[{EXTRAS}]=={version}", *test_requirements(tree)]
    stamp_text = "\n".join([*requirements, _install_inputs(REPO / "pyproject.toml")])
    stamp = env / ".installed"
    digest = hashlib.sha256(stamp_text.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest and python.exists():
        return python, digest
    log(f"installing anthropic {version} and the SDK's test dependencies into {env.relative_to(REPO)}")
    shutil.rmtree(env, ignore_errors=True)
    _run([UV, "venv", "-q", "--python", sys.executable, env], home / "setup.log")
    (home / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    _run(
        [UV, "pip", "install", "-q", "--python", python, "-r", home / "requirements.txt", "-e", REPO],
        home / "setup.log",
    )
    require_anthropic(python, version)  # the editable install must not have moved it
    stamp.write_text(digest)
    return python, digest


def require_anthropic(python: Path, version: str) -> None:
    """Stop unless `python` imports exactly anthropic `version` (what a venv's installs ended with)."""
    installed = subprocess.run(
        [python, "-c", "import anthropic; print(anthropic.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=python.parent,
    ).stdout.strip()
    if installed != version:
        raise SystemExit(f"sdk-suite: wanted anthropic {version} in {python.parent.parent}, got {installed}")


# ---- runs and comparison ---------------------------------------------------------------------------

Outcomes = dict[str, tuple[str, str]]  # node id -> (outcome, first line of the failure)


def outcomes(lines: Iterable[str]) -> Outcomes:
    """Per node id, folded over its phases (setup, call, teardown): any failed phase makes it failed."""
    result: Outcomes = {}
    rank = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 3, "failed": 3}
    for line in lines:
        if not line.strip():
            continue
        entry = json.loads(line)
        nodeid, outcome, message = entry["nodeid"], entry["outcome"], entry["message"]
        seen = result.get(nodeid)
        if seen is None or rank.get(outcome, 3) > rank.get(seen[0], 3):
            result[nodeid] = (outcome, message)
    return result


@dataclass
class Comparison:
    shim_only: list[tuple[str, str]] = field(default_factory=list)  # (node id, message with the shim)
    both: list[tuple[str, str]] = field(default_factory=list)  # (node id, message bare)
    bare_only: list[tuple[str, str]] = field(default_factory=list)  # passed with the shim: flaky, shown
    missing: list[str] = field(default_factory=list)  # ran bare, never reported with the shim


def compare(bare: Outcomes, shim: Outcomes) -> Comparison:
    result = Comparison()
    for nodeid in sorted(bare.keys() | shim.keys()):
        bare_failed = nodeid in bare and bare[nodeid][0] in FAILED
        if nodeid not in shim:
            result.missing.append(nodeid)
            continue
        shim_failed = shim[nodeid][0] in FAILED
        if shim_failed and bare_failed:
            result.both.append((nodeid, bare[nodeid][1]))
        elif shim_failed:
            result.shim_only.append((nodeid, shim[nodeid][1]))
        elif bare_failed:
            result.bare_only.append((nodeid, bare[nodeid][1]))
    return result


@dataclass
class Run:
    outcomes: Outcomes
    seconds: float  # wall clock
    cpu: float = 0.0  # user + system seconds of pytest and its workers: the figure a shared machine keeps
    cached: bool = False


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def progress(path: Path) -> tuple[int, int]:
    """(tests reported so far, of which failed) from an outcomes file that is still being written."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return 0, 0
    # The last line may be half written: fold only whole lines.
    found = outcomes(line for line in lines if line.endswith("}"))
    return len(found), sum(1 for outcome, _ in found.values() if outcome in FAILED)


def _wait_reporting(process: subprocess.Popen[bytes], out: Path, label: str, expected: int | None) -> int:
    """Wait for pytest, printing how far it got every PROGRESS_EVERY seconds (a run takes minutes)."""
    started = time.monotonic()
    while True:
        try:
            return process.wait(timeout=PROGRESS_EVERY)
        except subprocess.TimeoutExpired:
            done, failed = progress(out)
            of = f"/{expected}" if expected else ""
            log(f"{label}: {done}{of} tests, {failed} failed, {time.monotonic() - started:.0f}s")
        except BaseException:
            process.kill()  # Ctrl-C or a fault here: never leave pytest and its workers behind
            process.wait()
            raise


def pytest_run(
    python: Path,
    tree: Path,
    paths: Sequence[str],
    work: Path,
    mode: str,
    workers: str,
    label: str = "",
    expected: int | None = None,
) -> Run:
    """One pytest session over `paths` in the sdist tree; `mode` is bare or shim (plus a suffix).
    `label` and `expected` (the number of tests, when known) only shape the progress lines."""
    out = work / f"{mode}.jsonl"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_EXPORTER_"))}
    env["PYTHONPATH"] = str(HERE)
    env["SDK_SUITE_OUTCOMES"] = str(out)
    # Our own pytest11 plugin (the fake_anthropic fixture) stays out of both runs: bare means bare.
    plugins = ["-p", "no:claude_exporter", "-p", "tests._alias_httpx", "-p", "outcomes_plugin"]
    if mode.startswith("shim"):
        reports = work / "shim-reports"
        shutil.rmtree(reports, ignore_errors=True)
        reports.mkdir(parents=True)
        env["SDK_SUITE_SHIM_REPORT_DIR"] = str(reports)
        plugins += ["-p", "shim_plugin"]
    # The sdist's addopts say `-n auto`; ours replace them so the worker count is ours to choose.
    cmd = [str(python), "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", *plugins]
    if workers != "0":
        cmd += ["-n", workers, "--dist", "worksteal"]
    cmd += ["--tb=short", "--no-header", "-rN", *paths]
    started, cpu = time.monotonic(), _children_cpu()
    with open(work / f"{mode}.log", "w", encoding="utf-8") as log_file:
        process = subprocess.Popen(cmd, cwd=tree, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        code = _wait_reporting(process, out, f"{label}, {mode}", expected)
    seconds, cpu = time.monotonic() - started, _children_cpu() - cpu
    if code not in (0, 1) or not out.exists():
        tail = (work / f"{mode}.log").read_text(encoding="utf-8").splitlines()[-30:]
        raise SystemExit(
            f"sdk-suite: pytest ({mode}) ended with status {code}, not a test result:\n" + "\n".join(tail)
        )
    return Run(outcomes(out.read_text(encoding="utf-8").splitlines()), seconds, cpu)


def bare_run(
    python: Path, tree: Path, paths: Sequence[str], work: Path, workers: str, key: str, label: str
) -> Run:
    """The bare run depends only on the venv, the selection and our outcomes plugin: reuse it when none
    of those changed. Its failures are re-checked fresh later, so a cached flake cannot hide anything."""
    cache = work / "bare.cached.json"
    if cache.exists():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            found = {k: (v[0], v[1]) for k, v in saved["outcomes"].items()}
            return Run(found, saved["seconds"], saved["cpu"], cached=True)
    run = pytest_run(python, tree, paths, work, "bare", workers, label)
    cache.write_text(
        json.dumps({"key": key, "seconds": run.seconds, "cpu": run.cpu, "outcomes": run.outcomes})
    )
    return run


def shim_totals(work: Path) -> dict[str, float]:
    totals: dict[str, float] = {}
    for report in sorted((work / "shim-reports").glob("*.json")):
        for name, value in json.loads(report.read_text(encoding="utf-8")).items():
            if name == "instrumented":
                totals["workers_not_instrumented"] = totals.get("workers_not_instrumented", 0.0) + (not value)
            elif isinstance(value, (int, float)):
                totals[name] = totals.get(name, 0.0) + value
    return totals


def _table(rows: Sequence[tuple[str, str]], indent: str = "    ") -> str:
    width = max(len(nodeid) for nodeid, _ in rows)
    return "\n".join(f"{indent}{nodeid:<{width}}  {message}" for nodeid, message in rows)


def _counts(run: Run) -> str:
    tally: dict[str, int] = {}
    for outcome, _ in run.outcomes.values():
        tally[outcome] = tally.get(outcome, 0) + 1
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(tally.items()))


def _file_digest(*paths: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()


def suite(version: str, workers: str, selection: Sequence[str]) -> bool:
    """Set up, run bare and shim, print the comparison. True when the shim changed no outcome."""
    home = CACHE / f"anthropic-{version}"
    started = time.monotonic()
    tree = sdist_tree(version, home)
    python, venv_digest = venv(version, home, tree)
    setup_s = time.monotonic() - started
    paths = [p for p in selection if (tree / p).exists()]
    absent = [p for p in selection if p not in paths]
    work = home / "runs"
    work.mkdir(exist_ok=True)
    log(f"anthropic {version}: set-up {setup_s:.0f}s; {len(paths)} test paths, bare then with the shim")
    if absent:
        log(f"anthropic {version}: not in this version, skipped: {', '.join(absent)}")
    bare_key = f"{venv_digest} {_file_digest(HERE / 'outcomes_plugin.py')} {' '.join(paths)}"
    label = f"anthropic {version}"
    bare = bare_run(python, tree, paths, work, workers, bare_key, label)
    shim = pytest_run(python, tree, paths, work, "shim", workers, label, len(bare.outcomes))
    result = compare(bare.outcomes, shim.outcomes)
    totals = shim_totals(work)
    if bare.cached and result.both:
        # Failing in both only counts as the environment's if it fails bare now, not just in the cache.
        again = pytest_run(python, tree, [n for n, _ in result.both], work, "bare-recheck", "0", label)
        result = compare({**bare.outcomes, **again.outcomes}, shim.outcomes)

    print(f"\n== anthropic {version} ==")
    cached = "; cached from an earlier run" if bare.cached else ""
    for name, run in (("bare", bare), ("shim", shim)):
        print(
            f"  {name}: {len(run.outcomes)} tests in {run.seconds:.0f}s, {run.cpu:.0f}s of CPU"
            f" ({_counts(run)}{cached if run is bare else ''})"
        )
    requests = totals.get("claude_requests_total", 0.0)
    faults = {k.split(":", 1)[1]: v for k, v in totals.items() if k.startswith("internal_errors:")}
    by_stage = ", ".join(f"{stage}: {n:.0f}" for stage, n in sorted(faults.items()))
    print(
        f"  the shim recorded {requests:.0f} requests; {sum(faults.values()):.0f} swallowed internal errors"
    )
    if by_stage:
        print(f"    by stage (not failing the target; `--debug-shim` logs them): {by_stage}")
    ok = True
    if requests <= 0 or totals.get("workers_not_instrumented"):
        print("  FAIL: the shim run recorded no request, or a worker was not instrumented: it proves nothing")
        ok = False
    if result.shim_only:
        print(f"  FAIL: {len(result.shim_only)} tests fail only with the shim on:")
        print(_table(result.shim_only))
        ok = False
    if result.missing:
        print(f"  FAIL: {len(result.missing)} tests ran bare but never reported with the shim on:")
        print("\n".join(f"    {nodeid}" for nodeid in result.missing))
        ok = False
    if result.both:
        print(f"  {len(result.both)} tests fail with and without the shim (the environment's, not counted):")
        print(_table(result.both))
    if result.bare_only:
        print(f"  {len(result.bare_only)} tests failed bare only (flaky? not counted):")
        print(_table(result.bare_only))
    print(f"  logs: {work.relative_to(REPO)}/{{bare,shim}}.log; {time.monotonic() - started:.0f}s in all")
    return ok


def prune(keep: Sequence[str]) -> None:
    """Drop the cached venvs and trees of versions this run does not use: each is 100-200 MB, and with
    uv's cache a version run again costs seconds to set up."""
    for home in sorted(CACHE.glob("anthropic-*")):
        if home.is_dir() and home.name.removeprefix("anthropic-") not in keep:
            log(f"removing {home.relative_to(REPO)} (not run this time; --keep keeps it)")
            shutil.rmtree(home, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "versions",
        nargs="*",
        help="anthropic versions, or floor, locked, newest (default: $SDK_SUITE_VERSIONS, else all three)",
    )
    parser.add_argument("-n", "--workers", default=os.environ.get("SDK_SUITE_WORKERS", "2"))
    parser.add_argument("--wide", action="store_true", help=f"also run {', '.join(WIDE)}")
    parser.add_argument("--keep", action="store_true", help="keep the cache of versions not run this time")
    parser.add_argument(
        "--debug-shim",
        action="store_true",
        help="write the shim's swallowed faults with tracebacks to runs/shim-reports/*.faults.log",
    )
    args = parser.parse_args(argv)
    names = args.versions or os.environ.get("SDK_SUITE_VERSIONS", "").split() or list(KEYWORDS)
    versions = resolve_all(names)
    selection = SELECTION + (WIDE if args.wide else ())
    if args.debug_shim:
        os.environ["SDK_SUITE_SHIM_DEBUG"] = "1"
    log(f"anthropic versions: {', '.join(versions)} ({' '.join(names)})")
    if not args.keep:
        prune(versions)
    started = time.monotonic()
    failed = [version for version in versions if not suite(version, args.workers, selection)]
    elapsed = time.monotonic() - started
    if failed:
        print(f"\nsdk-suite: FAILED: the shim changes SDK test outcomes on anthropic {', '.join(failed)}")
        return 1
    print(
        f"\nsdk-suite: the shim changed no SDK test outcome on anthropic {', '.join(versions)}"
        f" ({elapsed:.0f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
