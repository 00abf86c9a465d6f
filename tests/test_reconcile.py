"""``claude-exporter reconcile`` end to end: a real Prometheus holding a week of the exporter's counters
(backfilled with promtool from OpenMetrics), the fake Admin API of ``claude_exporter.testing``, and the
command as a user runs it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from claude_exporter.cli import main
from claude_exporter.cli.reconcile import days_since
from claude_exporter.testing.admin_api import FakeAdminAPI
from stack import Prometheus, require_binary

KEY_ENV = "TEST_ADMIN_KEY"
KEY = "sk-ant-admin-test-key"
STEP = 300  # seconds between backfilled samples
# USD per day per model as the exporter recorded it (request-side names), and tokens per day.
EST = {"claude-sonnet-4-5": 12.0, "claude-opus-4-6": 3.0}
TOKENS = {"claude-sonnet-4-5": 2_000_000, "claude-opus-4-6": 150_000}


def _today() -> datetime:
    return datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def _openmetrics(days: int) -> str:
    """Counters growing linearly through each day by the EST / TOKENS amounts, a sample every STEP."""
    start = _today() - timedelta(days=days)
    steps = days * 86400 // STEP
    lines = ["# HELP claude_cost_usd Estimated cost.", "# TYPE claude_cost_usd counter"]
    for model, per_day in EST.items():
        for i in range(steps + 1):
            t = start.timestamp() + i * STEP
            lines.append(
                f'claude_cost_usd_total{{agent="a",model="{model}"}} {per_day * i * STEP / 86400:.9f} {t:.0f}'
            )
    lines += ["# HELP claude_tokens Tokens.", "# TYPE claude_tokens counter"]
    for model, per_day in TOKENS.items():
        for i in range(steps + 1):
            t = start.timestamp() + i * STEP
            labels = f'agent="a",model="{model}",type="input"'
            lines.append(f"claude_tokens_total{{{labels}}} {per_day * i * STEP / 86400:.3f} {t:.0f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("prom")
    promtool = require_binary("promtool")
    require_binary("prometheus")
    source = tmp / "history.om"
    source.write_text(_openmetrics(8))
    data = tmp / "prometheus-data"
    data.mkdir()
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Prometheus("global:\n  scrape_interval: 1m\nscrape_configs: []\n", tmp=tmp) as prom:
        prom.wait_for("count(last_over_time(claude_cost_usd_total[2d])) == 2", timeout=30)
        yield prom


def _admin(admin: FakeAdminAPI, days: int, skew: dict[tuple[int, str], float] | None = None) -> None:
    """The bill for the last ``days`` complete days: what was estimated, times an optional skew."""
    for back in range(1, days + 1):
        day = (_today() - timedelta(days=back)).strftime("%Y-%m-%d")
        for model, usd in EST.items():
            billed_name = "claude-sonnet-4-5-20250929" if model == "claude-sonnet-4-5" else model
            factor = (skew or {}).get((back, model), 1.0)
            # the token cost arrives in parts (input, output, cache), as the real report splits it
            admin.add_cost(day, billed_name, usd * factor * 0.25, token_type="uncached_input_tokens")
            admin.add_cost(day, billed_name, usd * factor * 0.75, token_type="output_tokens")
            admin.add_usage(day, billed_name, uncached_input_tokens=TOKENS[model])
        admin.add_cost(day, None, 0.40, cost_type="code_execution", token_type=None)


def _run(admin: FakeAdminAPI, prom: Prometheus, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.setenv(KEY_ENV, KEY)
    args = ["reconcile", "--admin-key-env", KEY_ENV, "--since", "7d", "--prometheus", prom.url]
    return main([*args, "--admin-url", admin.url, *extra])


@pytest.mark.system
def test_a_matching_week_passes(
    prometheus: Prometheus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeAdminAPI(key=KEY) as admin:
        _admin(admin, 7)
        assert _run(admin, prometheus, monkeypatch) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line[:4].isdigit()]
    # 7 days x (2 models + the code-execution row)
    assert len(rows) == 21, out
    yesterday = (_today() - timedelta(days=1)).strftime("%Y-%m-%d")
    sonnet = next(r for r in rows if r.startswith(yesterday) and "claude-sonnet-4-5" in r).split()
    # estimated 12 (Prometheus) against billed 12 (3 + 9) under the dated name: joined on the canonical id
    assert sonnet[2:5] == ["standard", "12.0000", "12.0000"]
    assert sonnet[-2:] == ["2,000,000", "2,000,000"]
    code = next(r for r in rows if r.startswith(yesterday) and "(code execution)" in r)
    assert "0.4000" in code and "not estimated" in code
    assert "0 of 14 compared rows differ by more than 2%." in out
    # the key went in the header: the analytics reports first (this fake has none: 404), then the legacy
    # reports; never into the output
    assert {r.path for r in admin.requests} == {
        "/v1/organizations/analytics/cost_report",
        "/v1/organizations/cost_report",
        "/v1/organizations/usage_report/messages",
    }
    assert KEY not in out


@pytest.mark.system
def test_a_difference_over_two_percent_is_flagged(
    prometheus: Prometheus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeAdminAPI(key=KEY) as admin:
        # two days ago opus was billed 5% more than estimated; yesterday sonnet 1% more (within tolerance)
        _admin(admin, 7, {(2, "claude-opus-4-6"): 1.05, (1, "claude-sonnet-4-5"): 1.01})
        assert _run(admin, prometheus, monkeypatch) == 1
    out = capsys.readouterr().out
    two_days_ago = (_today() - timedelta(days=2)).strftime("%Y-%m-%d")
    flagged = [line for line in out.splitlines() if "OFF BY >2%" in line]
    assert len(flagged) == 1
    # estimated 3, billed 3.15: -0.15 (-4.76%)
    assert flagged[0].startswith(two_days_ago) and "claude-opus-4-6" in flagged[0]
    assert "-0.1500 (-4.76%)" in flagged[0]
    assert "1 of 14 compared rows differ by more than 2%." in out


@pytest.mark.system
def test_web_search_fees_are_shared_out_by_searches(
    prometheus: Prometheus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeAdminAPI(key=KEY) as admin:
        yesterday = (_today() - timedelta(days=1)).strftime("%Y-%m-%d")
        # Yesterday's sonnet bill: $11.70 of tokens and 30 web searches ($0.30, on a row with no model).
        admin.add_cost(yesterday, "claude-sonnet-4-5-20250929", 11.70)
        admin.add_cost(yesterday, None, 0.30, cost_type="web_search", token_type=None)
        admin.add_usage(yesterday, "claude-sonnet-4-5-20250929", web_search_requests=30)
        admin.add_cost(yesterday, "claude-opus-4-6", 3.0)
        assert _run(admin, prometheus, monkeypatch, "--since", "24h") == 0
    out = capsys.readouterr().out
    sonnet = next(r for r in out.splitlines() if r.startswith(yesterday) and "claude-sonnet-4-5" in r)
    assert sonnet.split()[2:5] == ["standard", "12.0000", "12.0000"]


@pytest.mark.system
def test_a_wrong_key_is_a_runtime_failure_naming_the_source(
    prometheus: Prometheus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeAdminAPI(key="another-key") as admin:
        assert _run(admin, prometheus, monkeypatch) == 1
    err = capsys.readouterr().err
    # the analytics report's 401 falls back to the legacy one, whose 401 is the error
    expected = "Admin API /v1/organizations/cost_report answered HTTP 401: invalid x-api-key"
    assert err == f"claude-exporter reconcile: {expected}\n"
    assert KEY not in err


@pytest.mark.unit
def test_usage_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert main(["reconcile", "--admin-key-env", KEY_ENV, "--prometheus", "http://127.0.0.1:9"]) == 2
    assert f"{KEY_ENV} (--admin-key-env) is not set" in capsys.readouterr().err
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)
    assert main(["reconcile", "--admin-key-env", KEY_ENV, "--since", "soon", "--prometheus", "http://x"]) == 2
    assert "--since" in capsys.readouterr().err


@pytest.mark.integration
def test_an_unreachable_prometheus_is_a_runtime_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeAdminAPI(key=KEY) as admin:
        monkeypatch.setenv(KEY_ENV, KEY)
        args = [
            "reconcile",
            "--admin-key-env",
            KEY_ENV,
            "--prometheus",
            "http://127.0.0.1:9",
            "--admin-url",
            admin.url,
        ]
        assert main(args) == 1
    assert "Prometheus at http://127.0.0.1:9 /api/v1/query could not be reached" in capsys.readouterr().err


@pytest.mark.unit
@pytest.mark.parametrize(
    ("since", "now", "first", "count"),
    [
        ("7d", "2026-11-30T06:00:00", "2026-11-23", 7),
        ("24h", "2026-11-30T06:00:00", "2026-11-29", 1),
        ("48h", "2026-11-30T00:00:00", "2026-11-28", 2),
        ("1h", "2026-11-30T06:00:00", None, 0),
    ],
)
def test_days_since_are_complete_utc_days(since: str, now: str, first: str | None, count: int) -> None:
    days = days_since(since, datetime.fromisoformat(now).replace(tzinfo=timezone.utc))
    assert len(days) == count
    if first:
        assert days[0].label == first
        assert days[-1].end == datetime.fromisoformat(now[:10]).replace(tzinfo=timezone.utc)
