"""``claude-exporter reconcile`` compares like with like (issue 21, item 3): a week of standard, batch and
priority traffic plus Vertex requests, worked out by hand, against both kinds of Admin API report.

Each day ``d`` (1..7, oldest first) the exporter recorded, at ``d`` times these figures:

* claude-sonnet-4-5 (the bill says claude-sonnet-4-5-20250929), $3/M input, $15/M output, $10 per 1,000
  web searches, batch half the token rates (search fees never discounted), priority at list rates:

  ======== ============= ============ ======== ==================================== =======
  tier     input         output       searches cost                                 tokens
  ======== ============= ============ ======== ==================================== =======
  standard 1,000,000     200,000      10       3.00 + 3.00 + 0.10 = 6.10            1.2M
  batch    2,000,000     400,000      10       3.00 + 3.00 + 0.10 = 6.10            2.4M
  priority 500,000       100,000      10       1.50 + 1.50 + 0.10 = 3.10            0.6M
  ======== ============= ============ ======== ==================================== =======

  so ``claude_cost_usd_total`` grew 15.30 and ``claude_tokens_total`` 4.2M;
* claude-opus-4-6, $5/M input: 1,000,000 first-party input tokens, $5.00; and 300,000 tokens through a
  Vertex client (``claude-opus-4-6@default``), unpriced with reason ``platform``, $0.

The legacy cost report bills sonnet's standard and batch tokens ($6.00 each), $0.20 of web searches on a
row without a model (the 20 searches of the tiers it covers; Priority Tier is not in it), opus $5.00. So:
standard 6.10 = 6.00 + 0.10 of the fee row, batch 6.10, priority 3.10 apart, opus 5.00, Vertex apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from claude_exporter.cli import main
from claude_exporter.testing.admin_api import FakeAdminAPI
from reconcile_peers import FakePrometheus

KEY_ENV = "TEST_RECONCILE_TIERS_KEY"
KEY = "sk-ant-admin-tiers"
SONNET, SONNET_BILLED, OPUS, OPUS_VERTEX = (
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-6",
    "claude-opus-4-6@default",
)


def _days() -> list[tuple[int, str]]:
    """(d, label) for the last seven complete UTC days, d = 1 the oldest."""
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return [(8 - back, (today - timedelta(days=back)).strftime("%Y-%m-%d")) for back in range(7, 0, -1)]


def _record(prom: FakePrometheus, tier_family: bool = True) -> None:
    for d, day in _days():
        prom.add(day, "claude_cost_usd_total", 15.30 * d, agent="a", model=SONNET)
        if tier_family:
            for tier, usd in (("standard", 6.10), ("batch", 6.10), ("priority", 3.10)):
                prom.add(day, "claude_cost_by_tier_usd_total", usd * d, agent="a", model=SONNET, tier=tier)
            prom.add(day, "claude_cost_by_tier_usd_total", 5.0 * d, agent="a", model=OPUS, tier="standard")
        prom.add(day, "claude_tokens_total", 3_600_000 * d, agent="a", model=SONNET, type="input")
        prom.add(day, "claude_tokens_total", 600_000 * d, agent="a", model=SONNET, type="output")
        prom.add(day, "claude_cost_usd_total", 5.0 * d, agent="a", model=OPUS)
        prom.add(day, "claude_tokens_total", 1_000_000 * d, agent="a", model=OPUS, type="input")
        prom.add(day, "claude_tokens_total", 300_000 * d, agent="a", model=OPUS_VERTEX, type="input")
        prom.add(
            day, "claude_exporter_unpriced_tokens_total", 300_000 * d, model=OPUS_VERTEX, reason="platform"
        )


def _bill(admin: FakeAdminAPI) -> None:
    for d, day in _days():
        for tier, factor in (("standard", 1), ("batch", 2), ("priority", 0.5)):
            rate = 0.5 if tier == "batch" else 1.0
            for token_type, tokens, per_million in (
                ("uncached_input_tokens", 1_000_000 * factor, 3.0),
                ("output_tokens", 200_000 * factor, 15.0),
            ):
                usd = tokens * d * per_million * rate / 1e6
                admin.add_cost(day, SONNET_BILLED, usd, token_type=token_type, service_tier=tier)
            admin.add_usage(
                day,
                SONNET_BILLED,
                uncached_input_tokens=int(1_000_000 * factor * d),
                output_tokens=int(200_000 * factor * d),
                web_search_requests=10 * d,
                service_tier=tier,
            )
        # the searches of the tiers the report covers (standard and batch): 20 x $0.01
        admin.add_cost(day, None, 0.20 * d, cost_type="web_search", token_type=None, service_tier=None)
        admin.add_cost(day, OPUS, 5.0 * d)
        admin.add_usage(day, OPUS, uncached_input_tokens=1_000_000 * d)
        admin.add_cost(day, None, 0.40, cost_type="code_execution", token_type=None, service_tier=None)


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    with FakePrometheus() as fake:
        yield fake


def _run(admin: FakeAdminAPI, prom: FakePrometheus, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv(KEY_ENV, KEY)
    args = ["reconcile", "--admin-key-env", KEY_ENV, "--since", "7d", "--prometheus", prom.url]
    return main([*args, "--admin-url", admin.url])


def _rows(out: str, day: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in out.splitlines():
        if line.startswith(day):
            cells = line.split()
            rows[(cells[1], cells[2])] = cells[3:]
    return rows


@pytest.mark.integration
def test_a_week_of_priority_and_batch_traffic_against_the_legacy_reports_has_no_false_difference(
    prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(prometheus)
    with FakeAdminAPI(key=KEY) as admin:
        _bill(admin)
        assert _run(admin, prometheus, monkeypatch) == 0
    out = capsys.readouterr().out
    # 7 days x (sonnet standard, sonnet batch, opus standard): nothing flagged
    assert "0 of 21 compared rows differ by more than 2%." in out, out
    assert "billed: Admin API cost and usage reports" in out
    _, day = _days()[2]  # d = 3
    rows = _rows(out, day)
    assert rows[(SONNET, "standard")] == [
        "18.3000",
        "18.3000",
        "+0.0000",
        "(+0.00%)",
        "12,600,000",
        "12,600,000",
    ]
    assert rows[(SONNET, "batch")] == ["18.3000", "18.3000", "+0.0000", "(+0.00%)", "-", "-"]
    assert rows[(SONNET, "priority")] == [
        "9.3000",
        "-",
        "-",
        "-",
        "-",
        "apart:",
        "not",
        "in",
        "the",
        "cost",
        "report",
    ]
    assert rows[(OPUS, "standard")] == ["15.0000", "15.0000", "+0.0000", "(+0.00%)", "3,000,000", "3,000,000"]
    # Vertex tokens never join the first-party opus row through the canonical id
    assert rows[(OPUS, "bedrock/vertex")] == [
        "-",
        "-",
        "-",
        "900,000",
        "-",
        "apart:",
        "billed",
        "by",
        "the",
        "platform",
    ]
    assert rows[("(code", "execution)")][:3] == ["-", "-", "0.4000"]


@pytest.mark.integration
def test_the_analytics_reports_are_used_where_they_answer(
    prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(prometheus)
    with FakeAdminAPI(key=KEY, analytics=True) as admin:
        _bill(admin)
        _, first = _days()[0]
        # a claude.ai seat's chat on opus: on the analytics bill, never seen by the exporter
        admin.add_cost(first, OPUS, 2.0, product="chat")
        admin.add_usage(first, OPUS, uncached_input_tokens=400_000, product="chat")
        assert _run(admin, prometheus, monkeypatch) == 0
        paths = {r.path for r in admin.requests}
    out = capsys.readouterr().out
    assert paths == {"/v1/organizations/analytics/cost_report", "/v1/organizations/analytics/usage_report"}
    assert "billed: Admin API analytics cost and usage reports" in out
    # 7 days x (sonnet standard+batch, opus)
    assert "0 of 14 compared rows differ by more than 2%." in out, out
    _, day = _days()[2]
    rows = _rows(out, day)
    # no tier dimension on the analytics bill: standard and batch are one figure, 18.30 + 18.30
    assert rows[(SONNET, "standard+batch")] == [
        "36.6000",
        "36.6000",
        "+0.0000",
        "(+0.00%)",
        "12,600,000",
        "12,600,000",
    ]
    assert rows[(SONNET, "priority")][:2] == ["9.3000", "-"]
    assert rows[(OPUS, "standard+batch")] == [
        "15.0000",
        "15.0000",
        "+0.0000",
        "(+0.00%)",
        "3,000,000",
        "3,000,000",
    ]
    chat = _rows(out, first)[("(claude.ai", "chat)")]
    assert chat[:3] == ["-", "-", "2.0000"] and chat[-2:] == ["not", "estimated"]


@pytest.mark.integration
def test_an_exporter_without_the_tier_family_compares_everything_as_standard(
    prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older exporter: priority and batch spend are in the standard estimate, so the days differ,
    and the report says which tier."""
    _record(prometheus, tier_family=False)
    with FakeAdminAPI(key=KEY) as admin:
        _bill(admin)
        assert _run(admin, prometheus, monkeypatch) == 1
    out = capsys.readouterr().out
    _, day = _days()[2]
    rows = _rows(out, day)
    # 45.90 estimated (15.30 x 3) against 18.30 billed standard; batch billed, nothing estimated
    assert rows[(SONNET, "standard")][:3] == ["45.9000", "18.3000", "+27.6000"]
    assert rows[(SONNET, "batch")][:3] == ["0.0000", "18.3000", "-18.3000"]
    assert rows[(OPUS, "standard")][:2] == ["15.0000", "15.0000"]


@pytest.mark.integration
def test_an_analytics_failure_other_than_a_refusal_is_not_hidden_by_the_fallback(
    prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeAdminAPI(key=KEY, analytics=True) as admin:
        admin.answers["/v1/organizations/analytics/cost_report"] = b'{"data": [], "has_more": "no"}'
        assert _run(admin, prometheus, monkeypatch) == 1
        paths = [r.path for r in admin.requests]
    err = capsys.readouterr().err
    assert err == (
        "claude-exporter reconcile: Admin API /v1/organizations/analytics/cost_report: "
        "has_more is a string, not true or false\n"
    )
    assert paths == ["/v1/organizations/analytics/cost_report"]


@pytest.mark.integration
def test_days_past_the_analytics_export_are_shown_not_judged(
    prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The analytics reports are refreshed every few hours: a bucket after ``data_refreshed_at`` is
    incomplete, so its rows are printed but never flagged or counted."""
    _record(prometheus)
    _, yesterday = _days()[-1]
    with FakeAdminAPI(key=KEY, analytics=True) as admin:
        _bill(admin)
        admin.refreshed_at = f"{yesterday}T06:00:00Z"
        admin.add_cost(yesterday, OPUS, -20.0)  # yesterday's opus bill half exported: 15.00 of 35.00
        assert _run(admin, prometheus, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "0 of 12 compared rows differ by more than 2%." in out, out
    opus = _rows(out, yesterday)[(OPUS, "standard+batch")]
    assert opus[:4] == ["35.0000", "15.0000", "+20.0000", "(+133.33%)"]
    assert opus[-4:] == ["bill", "not", "final", "yet"]


@pytest.mark.unit
def test_a_url_is_named_without_its_credentials() -> None:
    from claude_exporter.cli.reconcile.peer import shown

    assert shown("http://bob:s3cret@prometheus:9090/x") == "http://prometheus:9090/x"
    assert shown("https://api.anthropic.com") == "https://api.anthropic.com"


@pytest.mark.integration
def test_a_cost_report_that_itemises_priority_spend_is_compared_on_it(
    prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Priority is kept apart because the cost report leaves it out; a report that lists it is held to it."""
    _, day = _days()[-1]
    prometheus.add(day, "claude_cost_usd_total", 9.10, model=SONNET)
    prometheus.add(day, "claude_cost_by_tier_usd_total", 3.10, model=SONNET, tier="priority")
    item = {"model": SONNET_BILLED, "cost_type": "tokens", "currency": "USD"}
    results = [
        {**item, "amount": "600", "service_tier": "standard"},
        {**item, "amount": "250", "service_tier": "priority"},  # $2.50 billed against $3.10 estimated
    ]
    bucket = {"starting_at": f"{day}T00:00:00Z", "ending_at": "x", "results": results}
    with FakeAdminAPI(key=KEY) as admin:
        page = {"data": [bucket], "has_more": False, "next_page": None}
        admin.answers["/v1/organizations/cost_report"] = json.dumps(page).encode()
        monkeypatch.setenv(KEY_ENV, KEY)
        args = ["reconcile", "--admin-key-env", KEY_ENV, "--since", "24h", "--prometheus", prometheus.url]
        assert main([*args, "--admin-url", admin.url]) == 1
    rows = _rows(capsys.readouterr().out, day)
    assert rows[(SONNET, "standard")][:2] == ["6.0000", "6.0000"]
    assert rows[(SONNET, "priority")][:4] == ["3.1000", "2.5000", "+0.6000", "(+24.00%)"]
