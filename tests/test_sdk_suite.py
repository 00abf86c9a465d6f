"""The `make sdk-suite` harness (tools/sdk_suite) can fail: a test that fails only with the shim on is
reported as shim-only, one failing in both runs is not, and a shim run that recorded nothing shows.

It drives the harness's own plugins and comparison on a small stand-in for the SDK's tests, in real pytest
sessions, with the real shim making one request to the fake API; the SDK's suite itself is `make sdk-suite`.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import repo_tool

run = repo_tool("tools/sdk_suite/run.py")

STAND_IN = """
import claude_exporter
import pytest
from claude_exporter.testing import FakeAnthropic, Reply


def test_a_request():
    with FakeAnthropic() as fake:
        fake.script(Reply(text="hi"))
        message = fake.client(max_retries=0).messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert message.content[0].text == "hi"


def test_broken_by_the_shim():
    assert not claude_exporter.is_instrumented()


def test_broken_everywhere():
    assert 1 == 2


@pytest.mark.skip(reason="not here")
def test_skipped():
    pass


@pytest.mark.xfail(strict=True)
def test_expected_to_fail():
    assert False


@pytest.fixture
def teardown_broken_by_the_shim():
    yield
    assert not claude_exporter.is_instrumented()


def test_teardown(teardown_broken_by_the_shim):
    pass
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    """A tree shaped like the SDK's sdist: tests/ as a package with its `_alias_httpx` plugin module."""
    tests = tmp_path / "sdk" / "tests"
    tests.mkdir(parents=True)
    (tests / "__init__.py").write_text("")
    (tests / "_alias_httpx.py").write_text("")  # the SDK's aliases httpx for respx; nothing to alias here
    (tests / "test_stand_in.py").write_text(textwrap.dedent(STAND_IN))
    return tmp_path / "sdk"


@pytest.mark.system
def test_a_failure_only_with_the_shim_is_told_apart_from_the_environments(
    stand_in: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    python = Path(sys.executable)
    bare = run.pytest_run(python, stand_in, ["tests"], work, "bare", "0")
    shim = run.pytest_run(python, stand_in, ["tests"], work, "shim", "0")
    result = run.compare(bare.outcomes, shim.outcomes)

    prefix = "tests/test_stand_in.py::"
    assert [nodeid for nodeid, _ in result.shim_only] == [
        f"{prefix}test_broken_by_the_shim",
        f"{prefix}test_teardown",
    ]
    assert "AssertionError" in result.shim_only[0][1] or "assert not" in result.shim_only[0][1]
    assert [nodeid for nodeid, _ in result.both] == [f"{prefix}test_broken_everywhere"]
    assert result.bare_only == [] and result.missing == []
    assert bare.outcomes[f"{prefix}test_skipped"][0] == "skipped"
    assert shim.outcomes[f"{prefix}test_expected_to_fail"][0] == "xfailed"
    assert bare.outcomes[f"{prefix}test_a_request"][0] == "passed"
    # The shim really was on, and saw the one request (its plugin uninstruments before the report).
    totals = run.shim_totals(work)
    assert totals["claude_requests_total"] == 1
    assert totals.get("workers_not_instrumented", 0) == 0


@pytest.mark.unit
def test_a_test_that_never_reports_with_the_shim_on_is_missing() -> None:
    bare = {"t::a": ("passed", ""), "t::b": ("passed", "")}
    shim = {"t::a": ("passed", "")}
    assert run.compare(bare, shim).missing == ["t::b"]


@pytest.mark.unit
def test_any_failed_phase_fails_the_test_and_a_pass_hides_nothing() -> None:
    def line(nodeid: str, when: str, outcome: str, message: str = "") -> str:
        return json.dumps({"nodeid": nodeid, "when": when, "outcome": outcome, "message": message})

    folded = run.outcomes(
        [
            line("t::teardown", "setup", "passed"),
            line("t::teardown", "call", "passed"),
            line("t::teardown", "teardown", "failed", "E   boom"),
            line("t::skip", "setup", "skipped", "why"),
            line("t::skip", "teardown", "passed"),
            line("t::xpass", "call", "xpassed"),
        ]
    )
    assert folded == {
        "t::teardown": ("failed", "E   boom"),
        "t::skip": ("skipped", "why"),
        "t::xpass": ("xpassed", ""),
    }
    bare = dict.fromkeys(folded, ("passed", ""))
    assert [nodeid for nodeid, _ in run.compare(bare, folded).shim_only] == ["t::teardown", "t::xpass"]


@pytest.mark.system
def test_a_session_that_is_not_a_test_result_stops_the_harness(stand_in: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="status 4"):  # pytest's usage error: no such path
        run.pytest_run(Path(sys.executable), stand_in, ["tests/absent.py"], tmp_path, "bare", "0")


@pytest.mark.unit
def test_progress_counts_tests_reported_so_far_and_ignores_a_half_written_line(tmp_path: Path) -> None:
    out = tmp_path / "shim.jsonl"
    assert run.progress(out) == (0, 0)  # pytest has not opened it yet
    whole = [
        {"nodeid": "t::a", "when": "call", "outcome": "passed", "message": ""},
        {"nodeid": "t::b", "when": "setup", "outcome": "passed", "message": ""},
        {"nodeid": "t::b", "when": "call", "outcome": "failed", "message": "E boom"},
    ]
    out.write_text("".join(json.dumps(e) + "\n" for e in whole) + '{"nodeid": "t::c", "wh')
    assert run.progress(out) == (2, 1)


@pytest.mark.system
def test_a_long_run_prints_progress_lines(
    stand_in: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (stand_in / "tests" / "test_slow.py").write_text("import time\n\ndef test_slow():\n    time.sleep(0.6)\n")
    run.PROGRESS_EVERY, before = 0.2, run.PROGRESS_EVERY
    try:
        result = run.pytest_run(
            Path(sys.executable), stand_in, ["tests/test_slow.py"], tmp_path, "bare", "0", "stand-in", 1
        )
    finally:
        run.PROGRESS_EVERY = before
    assert result.outcomes["tests/test_slow.py::test_slow"][0] == "passed"
    lines = [line for line in capsys.readouterr().out.splitlines() if "stand-in, bare:" in line]
    assert lines and all(line.startswith("sdk-suite: ") and "/1 tests" in line for line in lines)


@pytest.mark.unit
def test_versions_not_run_are_pruned_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "CACHE", tmp_path)
    monkeypatch.setattr(run, "REPO", tmp_path.parent)
    for version in ("2.10.0", "2.16.0", "2.17.0"):
        (tmp_path / f"anthropic-{version}" / "venv").mkdir(parents=True)
    (tmp_path / "project-2.10.0").mkdir()
    run.prune(["2.10.0", "2.17.0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "anthropic-2.10.0",
        "anthropic-2.17.0",
        "project-2.10.0",
    ]


@pytest.mark.integration
def test_the_sdist_comes_from_the_simple_index_and_a_wrong_hash_is_refused(tmp_path: Path) -> None:
    """download_sdist against a real HTTP server on 127.0.0.1 speaking the index's JSON API (PEP 691)."""
    import hashlib
    import http.server
    import threading

    body = b"not really a tarball"
    served = {"sha256": hashlib.sha256(body).hexdigest()}

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/simple/anthropic/":
                files = [
                    {"filename": "anthropic-9.9.9.tar.gz", "url": "../../files/a.tar.gz", "hashes": served}
                ]
                reply, kind = json.dumps({"files": files}).encode(), "application/vnd.pypi.simple.v1+json"
            else:
                reply, kind = body, "application/octet-stream"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    index = f"http://127.0.0.1:{server.server_address[1]}/simple"
    try:
        run.download_sdist("9.9.9", tmp_path / "a.tar.gz", index)
        assert (tmp_path / "a.tar.gz").read_bytes() == body
        with pytest.raises(SystemExit, match=r"has no anthropic-1\.0\.0\.tar\.gz"):
            run.download_sdist("1.0.0", tmp_path / "b.tar.gz", index)
        served["sha256"] = "0" * 64
        with pytest.raises(SystemExit, match="does not match"):
            run.download_sdist("9.9.9", tmp_path / "c.tar.gz", index)
        assert not (tmp_path / "c.tar.gz").exists()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
