"""``claude-exporter reconcile``: estimated cost against the bill, per model, billing tier and UTC day.

Billed: the Admin API (:mod:`.admin`: the analytics reports where they answer, the legacy cost and usage
reports otherwise). Estimated: what the exporter recorded, read back from Prometheus (:mod:`.prometheus`).
The two sides name models differently (a request may say ``claude-sonnet-4-5``, the bill
``claude-sonnet-4-5-20250929``): both are joined on the price table's canonical id. Only complete UTC days
are compared (the current day's bill is not final); :mod:`.report` says what is compared and what is kept
apart. Both peers are untrusted (:mod:`.peer`): the whole run has a deadline, each answer a size cap, and
an answer of the wrong shape is one line naming where, exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone

from claude_exporter.cli.reconcile.admin import billed
from claude_exporter.cli.reconcile.peer import MAX_ANSWER_BYTES, Deadline, ReconcileError, shown, url_problem
from claude_exporter.cli.reconcile.prometheus import estimated
from claude_exporter.cli.reconcile.report import Day, Row, compare, days_since, render

__all__ = ["MAX_ANSWER_BYTES", "Day", "ReconcileError", "Row", "compare", "days_since", "render", "run"]


def _fail(code: int, message: str) -> int:
    print(f"claude-exporter reconcile: {message}", file=sys.stderr, flush=True)
    return code


def run(args: argparse.Namespace) -> int:
    """The command: 0 when every compared row is within ``--tolerance``, 1 when one is not or a peer
    failed (one line on standard error), 2 for a command line that cannot run."""
    from claude_exporter.recording.pricing import load_price_table

    key = os.environ.get(args.admin_key_env, "")
    if not key:
        return _fail(
            2, f"the environment variable {args.admin_key_env} (--admin-key-env) is not set or empty"
        )
    analytics_key = ""
    if args.analytics_key_env:
        analytics_key = os.environ.get(args.analytics_key_env, "")
        if not analytics_key:
            variable = f"the environment variable {args.analytics_key_env} (--analytics-key-env)"
            return _fail(2, f"{variable} is not set or empty")
    if not args.prometheus:
        return _fail(
            2, "--prometheus URL (or $PROMETHEUS_URL) is required: the estimate is read from Prometheus"
        )
    for flag, url in (("--prometheus", args.prometheus), ("--admin-url", args.admin_url)):
        problem = url_problem(url)
        if problem:
            return _fail(2, f"{flag} {shown(url)!r}: {problem}")
    try:
        days = days_since(args.since, datetime.now(timezone.utc))
    except ValueError as err:
        return _fail(2, str(err))
    if not args.tolerance >= 0:
        return _fail(2, "--tolerance must be >= 0")
    if not 0 < args.deadline < 86400:
        return _fail(2, "--deadline must be more than 0 and less than 86400 seconds")
    deadline = Deadline(args.deadline)
    table = load_price_table()

    def canonical(model: str) -> str:
        return table.resolve(model) or model.strip().lower()

    try:
        bill = billed(args.admin_url, key, days, canonical, deadline, analytics_key)
        est = estimated(args.prometheus, days, canonical, args.selector, deadline)
    except ReconcileError as err:
        return _fail(1, str(err))
    rows = compare(
        days,
        est_usd=est.usd,
        est_tokens=est.tokens,
        platform_tokens=est.platform_tokens,
        bill_usd=bill.usd,
        bill_tokens=bill.tokens,
        other=bill.other,
        by_tier=bill.by_tier,
        priority_billed=bill.priority_billed,
        final_until=bill.final_until,
    )
    reports = "analytics cost and usage reports" if bill.source == "analytics" else "cost and usage reports"
    sources = (
        f"estimated: Prometheus {shown(args.prometheus)}, increase(claude_cost_usd_total[1d]) by model and "
        f"tier; billed: Admin API {reports} at {shown(args.admin_url)}"
    )
    sys.stdout.write(render(rows, days, args.tolerance, sources))
    return 1 if any(row.off_by_more_than(args.tolerance) for row in rows) else 0
