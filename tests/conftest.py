"""Shared fixtures and helpers for the tests, the tier check and the xdist scheduling.

Tests drive the real anthropic SDK over real HTTP against the fake API (the ``fake_anthropic`` fixture of
the claude_exporter pytest plugin) and read the metrics from a fresh registry. Helpers are plain functions
here; test modules import them with ``from conftest import ...`` (tests/ is on sys.path, as for
``stack.py``). Every test carries exactly one tier marker (unit, integration, system, benchmark; see
pyproject.toml and the Makefile's test targets), or the run stops naming it.
"""

from __future__ import annotations

import gc
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import claude_exporter as ce
import pytest
from claude_exporter.config import parse_config
from claude_exporter.recording.pricing import load_price_table
from claude_exporter.recording.state import ACTIVE
from claude_exporter.recording.usage import Usage
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

MODEL = "claude-haiku-4-5"  # priced, and not on the SDK's deprecation list
UNKNOWN_MODEL = "claude-unknown-9"
USER = [{"role": "user", "content": "hi"}]
FAST = 0.01  # seconds: retry-after used where the wait itself is not under test


def kw(model: str = MODEL, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``messages.create`` / ``stream``."""
    return {"model": model, "max_tokens": 64, "messages": USER, **extra}


def repo_tool(relative: str) -> Any:
    """A repository script (rules, README and dashboard generators live beside their outputs) as a module."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / relative
    # Named by its path (three scripts are called generate.py), and registered: dataclasses look it up.
    name = re.sub(r"\W", "_", relative.removesuffix(".py")) + "_tool"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def val(reg: CollectorRegistry, name: str, **labels: str) -> float:
    """The sample's value, 0.0 when the series does not exist."""
    value = reg.get_sample_value(name, labels)
    return 0.0 if value is None else value


def has(reg: CollectorRegistry, name: str, **labels: str) -> bool:
    return reg.get_sample_value(name, labels) is not None


def requests(reg: CollectorRegistry, agent: str = "default", model: str = MODEL) -> tuple[float, float]:
    """(success, error) of claude_requests_total."""
    return (
        val(reg, "claude_requests_total", agent=agent, model=model, outcome="success"),
        val(reg, "claude_requests_total", agent=agent, model=model, outcome="error"),
    )


def tokens(reg: CollectorRegistry, agent: str = "default", model: str = MODEL) -> dict[str, float]:
    return {
        kind: val(reg, "claude_tokens_total", agent=agent, model=model, type=kind)
        for kind in ("input", "output", "cache_creation", "cache_read")
    }


def duration(reg: CollectorRegistry, agent: str = "default", model: str = MODEL) -> tuple[float, float]:
    """(count, sum) of claude_request_duration_seconds."""
    return (
        val(reg, "claude_request_duration_seconds_count", agent=agent, model=model),
        val(reg, "claude_request_duration_seconds_sum", agent=agent, model=model),
    )


def ttft(reg: CollectorRegistry, agent: str = "default", model: str = MODEL) -> tuple[float, float]:
    """(count, sum) of claude_time_to_first_token_seconds."""
    return (
        val(reg, "claude_time_to_first_token_seconds_count", agent=agent, model=model),
        val(reg, "claude_time_to_first_token_seconds_sum", agent=agent, model=model),
    )


def executions(reg: CollectorRegistry, agent: str = "default", task: str = "default") -> tuple[float, float]:
    """(success, error) of claude_executions_total."""
    return (
        val(reg, "claude_executions_total", agent=agent, task=task, outcome="success"),
        val(reg, "claude_executions_total", agent=agent, task=task, outcome="error"),
    )


def exec_hist(
    reg: CollectorRegistry, family: str, agent: str, task: str, **labels: str
) -> tuple[float, float]:
    """(count, sum) of an execution histogram (claude_execution_tokens / _requests / _duration_seconds)."""
    return (
        val(reg, f"{family}_count", agent=agent, task=task, **labels),
        val(reg, f"{family}_sum", agent=agent, task=task, **labels),
    )


def expected_cost(
    model: str = MODEL,
    *,
    input: int = 0,
    output: int = 0,
    cache_5m: int = 0,
    cache_1h: int = 0,
    cache_read: int = 0,
    batch: bool = False,
) -> float:
    """Cost by hand from the price table (USD per million tokens), below any long-context threshold."""
    price = load_price_table().lookup(model)
    assert price is not None, model
    total = (
        input * price.input
        + output * price.output
        + cache_5m * price.cache_write_5m
        + cache_1h * price.cache_write_1h
        + cache_read * price.cache_read
    ) / 1_000_000
    return total * price.batch_multiplier if batch else total


def usage_of(
    *,
    input: int = 0,
    output: int = 0,
    cache_5m: int = 0,
    cache_1h: int = 0,
    cache_read: int = 0,
    **fields: Any,
) -> Usage:
    """A request's ``Usage`` as the SDK's response fills it: these counts (1-hour writes given, as the API
    does, in the 5m/1h breakdown) and any other of its fields by name (``service_tier``, ``speed``,
    ``geo``, ``web_search``, ``web_fetch``, ``iterations``, ``fallback``)."""
    usage = Usage(input, output, cache_5m + cache_1h, cache_read)
    if cache_1h:
        usage.cache_5m, usage.cache_1h = cache_5m, cache_1h
    for name, value in fields.items():
        setattr(usage, name, value)
    return usage


def scrape(reg: CollectorRegistry) -> str:
    return generate_latest(reg).decode()


def families(reg: CollectorRegistry) -> dict[str, Any]:
    """Parsed exposition, by family name (counters without ``_total``, as the parser names them)."""
    return {family.name: family for family in text_string_to_metric_families(scrape(reg))}


def label_values(reg: CollectorRegistry, label: str) -> dict[str, set[str]]:
    """Every value of ``label`` in the exposition, per family."""
    out: dict[str, set[str]] = {}
    for name, family in families(reg).items():
        for sample in family.samples:
            if label in sample.labels:
                out.setdefault(name, set()).add(sample.labels[label])
    return out


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def collect_garbage() -> None:
    for _ in range(3):
        gc.collect()


def run_in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``target`` in a thread; the list receives its result or the exception it raised."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(target())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def is_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


def sdk_frames(exc: BaseException) -> list[str]:
    """Filenames of the traceback frames that are the SDK's own code."""
    root = anthropic.__file__.rsplit("/", 1)[0]
    names = []
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(root):
            names.append(filename)
        tb = tb.tb_next
    return names


# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def instrumented(
    request: pytest.FixtureRequest, registry: CollectorRegistry
) -> Iterator[tuple[CollectorRegistry, Any]]:
    """``instrument(registry=registry)`` for the test, always undone; with the module's
    ``INSTRUMENT_CONFIG`` (a parsed config) when it sets one."""
    if ACTIVE.recorder is not None:  # a test that failed half-way must not leak into this one
        ce.uninstrument()
    config = getattr(request.module, "INSTRUMENT_CONFIG", None)
    try:
        if config is None:
            rec = ce.instrument(registry=registry)
        else:
            rec = ce.instrument(config=config, registry=registry)
        yield registry, rec
    finally:
        ce.uninstrument()


@pytest.fixture
def fresh() -> Iterator[None]:
    """No recorder active when the test starts (it instruments itself), none after it."""
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    yield
    ce.uninstrument()


@pytest.fixture
def reg(instrumented: tuple[CollectorRegistry, Any]) -> CollectorRegistry:
    """The instrumented registry alone, for tests that do not need the recorder."""
    return instrumented[0]


# token_env: null, so no token from the environment (auth has its own tests).
NO_TOKEN = parse_config({"monitoring": {}, "exporter": {"server": {"token_env": None}}})


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The exporter's HTTP server on a free port of 127.0.0.1, closed after the test. Its ingest routes read
    whichever recorder is active; ``/metrics`` serves the test's ``reg`` when the test uses one (so a scrape
    shows what the test recorded). No token, unless the module's ``SERVER_OPTIONS`` (keyword arguments of
    ``start_http_server``) say otherwise."""
    options = {"config": NO_TOKEN, **getattr(request.module, "SERVER_OPTIONS", {})}
    if "reg" in request.fixturenames:
        options.setdefault("registry", request.getfixturevalue("reg"))
    srv = ce.start_http_server(0, **options)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the SDK's own backoff (0.5 s doubling) for retries that carry no retry-after header."""
    import anthropic._base_client as base

    monkeypatch.setattr(base, "INITIAL_RETRY_DELAY", 0.01)


# -- isolation: no test writes outside its temporary directories ------------------------------------------

# The data flag of each server binary a test may start, which must point into a temporary directory (each
# of them defaults to /var/lib/prometheus/..., shared with a real installation).
DATA_FLAGS = {
    "prometheus": "--storage.tsdb.path",
    "prometheus-alertmanager": "--storage.path",
    "alertmanager": "--storage.path",
    "prometheus-pushgateway": "--persistence.file",
    "pushgateway": "--persistence.file",
}
STARTED: list[tuple[list[str], str]] = []  # (argv, cwd) of every server binary a test started
_popen_init = subprocess.Popen.__init__


def data_outside_tmp(argv: list[str], cwd: str) -> str | None:
    """Why a server binary started with ``argv`` in ``cwd`` would write outside the temporary directories
    (its data flag missing, or pointing elsewhere); None when it keeps its data in one."""
    flag = DATA_FLAGS[Path(argv[0]).name]
    given = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(flag + "=")]
    if not given:
        return f"{argv[0]} started without {flag}: it writes under /var/lib/prometheus ({argv})"
    where = (Path(cwd) / given[0]).resolve()
    tmp = ("/tmp", os.environ.get("TMPDIR", "/tmp"), SESSION.get("tmp", "/tmp"))
    roots = {Path(p).resolve() for p in tmp}
    # The checkout is never a temporary directory, even when it is cloned under /tmp (as CI may).
    in_checkout = where.is_relative_to(Path(__file__).resolve().parent.parent)
    if in_checkout or not any(where.is_relative_to(root) for root in roots):
        return f"{argv[0]} keeps its data in {where}, outside the temporary directories ({argv})"
    return None


def _recording_init(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
    argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)]
    if Path(argv[0]).name in DATA_FLAGS:
        cwd = str(kwargs.get("cwd") or os.getcwd())
        problem = data_outside_tmp(argv, cwd)
        if problem is not None:  # the test that starts it fails, before anything is written
            raise AssertionError(problem)
        STARTED.append((argv, cwd))
    _popen_init(self, args, *rest, **kwargs)


def _untracked() -> set[str]:
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return set(done.stdout.splitlines()) if done.returncode == 0 else set()


ROOT = Path(__file__).resolve().parent.parent
SESSION: dict[str, Any] = {}
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... under pytest-xdist; None in the controller


def pytest_sessionstart(session: pytest.Session) -> None:
    subprocess.Popen.__init__ = _recording_init  # type: ignore[method-assign]
    if WORKER is None:
        SESSION["repo"] = _untracked()
    # Every temporary file of the tests and of the processes they start lands under one directory (one per
    # xdist worker, each its own).
    SESSION["tmp"] = Path(tempfile.mkdtemp(prefix="claude-exporter-tests-"))
    os.environ["TMPDIR"] = str(SESSION["tmp"])
    tempfile.tempdir = None  # re-read TMPDIR


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    subprocess.Popen.__init__ = _popen_init  # type: ignore[method-assign]
    shutil.rmtree(SESSION.get("tmp", ""), ignore_errors=True)
    if WORKER is None and "repo" in SESSION:
        # After every worker finished: no test left files in the checkout (the run fails, naming them).
        new = sorted(_untracked() - SESSION["repo"])
        if new:
            session.config.get_terminal_writer().line(
                "tests left files in the checkout:\n  " + "\n  ".join(new), red=True, bold=True
            )
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- tiers: every test carries exactly one ---------------------------------------------------------------

TIERS = ("unit", "integration", "system", "benchmark")


def tier_problems(items: list[pytest.Item]) -> list[str]:
    """One line per test that has no tier marker, or more than one."""
    problems = []
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            problems.append(f"{item.nodeid}: {'no tier marker' if not tiers else ' and '.join(tiers)}")
    return problems


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything: a test without a tier fails every run
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    problems = tier_problems(items)
    if problems:
        raise pytest.UsageError(
            f"{len(problems)} tests need exactly one tier marker of {', '.join(TIERS)} "
            "(module-level pytestmark or per test):\n  " + "\n  ".join(problems)
        )
    # The heaviest modules first (benchmark, then system), so under xdist the long ones start at once and
    # the many short unit tests fill the tail. A module stays in one piece (its module fixtures run once).
    rank: dict[str, int] = {}
    for item in items:
        tier = next(m.name for m in item.iter_markers() if m.name in TIERS)
        module = item.nodeid.split("::", 1)[0]
        rank[module] = min(rank.get(module, len(TIERS)), TIERS[::-1].index(tier))
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])


# -- pytest-xdist: which tests share a worker --------------------------------------------------------------

# Tests that are a scope of their own under ``--dist loadscope`` (each a long, independent subprocess), so the
# workers share them; every other test runs on the worker that runs the rest of its module.
SPREAD = ("tests/test_rules.py::test_promtool_test_rules[",)


@pytest.hookimpl(optionalhook=True)  # xdist's hook: a run with `-p no:xdist` must still collect
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with the module as the scope (not the class), except for SPREAD. (``loadgroup``
    would do, but pytest-xdist 3.8 renames items for it in a way pytest 9 ignores: groups are split.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep the collection order (heaviest modules first), not by size

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return nodeid if nodeid.startswith(SPREAD) else nodeid.split("::", 1)[0]

    return ModuleScheduling(config, log)


# -- garbage collection ------------------------------------------------------------------------------------


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything collection made (modules, test items, parametrized values) lives to the end of the session:
    moved out of the collector's sight, so each full collection a test forces (collect_garbage) walks only
    what tests made since, not the whole collected suite. Objects the tests create stay collectable."""
    gc.collect()
    gc.freeze()
