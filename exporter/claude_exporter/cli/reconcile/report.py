"""The report: complete UTC days, one row per model, day and billing tier, and the table printed.

A row compares like with like: the estimate of one tier against the bill of the same tier (standard and
batch apart where the bill says which is which, one ``standard+batch`` figure where it does not). Spend the
bill leaves out is shown apart and never flagged: priority-tier requests (billed under their commitment,
not in the cost report), Bedrock and Vertex tokens (billed by their platform), code execution and session
runtime (billed by time no response reports). Token columns, on a model's first row, count every tier of
first-party traffic on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from claude_exporter.cli.reconcile.peer import printable

__all__ = [
    "ALL_TIERS",
    "BATCH",
    "PRIORITY",
    "STANDARD",
    "TIERS",
    "Day",
    "Row",
    "compare",
    "days_since",
    "iso",
    "render",
]

STANDARD, BATCH, PRIORITY = "standard", "batch", "priority"
TIERS = (STANDARD, BATCH, PRIORITY)
ALL_TIERS = "standard+batch"  # a bill without a service-tier dimension: both in one figure
PLATFORM = "bedrock/vertex"
_DAY = timedelta(days=1)
_SINCE = re.compile(r"^(\d+)([dh])$")


@dataclass(frozen=True)
class Day:
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return self.start.strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Row:
    """One line of the report: a model's tier on a day, or a cost that is not per model (``(kind)``);
    ``None`` where a side has no figure to compare."""

    day: str
    model: str
    tier: str
    estimated_usd: float | None
    billed_usd: float | None
    estimated_tokens: int | None = None
    billed_tokens: int | None = None
    note: str = ""
    final: bool = True  # False: the bill of this day is still being exported, so it is shown, not judged

    @property
    def difference(self) -> float | None:
        if self.estimated_usd is None or self.billed_usd is None:
            return None
        return self.estimated_usd - self.billed_usd

    def off_by_more_than(self, percent: float) -> bool:
        diff = self.difference
        if diff is None or not self.final:
            return False
        if self.billed_usd == 0:
            return abs(diff) > 0.005  # something estimated, nothing billed (or the reverse): half a cent
        return abs(diff) / abs(self.billed_usd or 1) * 100 > percent


def days_since(since: str, now: datetime) -> list[Day]:
    """The complete UTC days that overlap the last ``since`` (``7d``, ``48h``) before ``now``."""
    m = _SINCE.match(since.strip())
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f'--since must be a number of days or hours such as "7d" or "48h", not {since!r}')
    try:
        span = timedelta(days=int(m.group(1))) if m.group(2) == "d" else timedelta(hours=int(m.group(1)))
        (now - span).astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"--since {since!r} reaches back before the calendar starts") from None
    today = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    first = (now - span).astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    day = first
    while day < today:
        out.append(Day(day, day + _DAY))
        day += _DAY
    return out


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------------------- comparison


def compare(
    days: list[Day],
    *,
    est_usd: Mapping[tuple[str, str, str], float],
    est_tokens: Mapping[tuple[str, str], int],
    platform_tokens: Mapping[tuple[str, str], int],
    bill_usd: Mapping[tuple[str, str, str], float],
    bill_tokens: Mapping[tuple[str, str], int],
    other: Mapping[tuple[str, str], float],
    by_tier: bool,
    priority_billed: bool,
    final_until: datetime | None = None,
) -> list[Row]:
    """The rows of ``days``: per model the compared tiers, then what is kept apart; then the costs that
    are not per model. ``by_tier`` False: the bill has one figure for standard and batch."""
    rows: list[Row] = []
    compared = (STANDARD, BATCH) if by_tier else (ALL_TIERS,)
    for day in days:
        label = day.label
        day_start = len(rows)
        models = sorted(
            {m for d, m, _ in est_usd if d == label}
            | {m for d, m, _ in bill_usd if d == label}
            | {m for d, m in est_tokens if d == label}
            | {m for d, m in bill_tokens if d == label}
            | {m for d, m in platform_tokens if d == label}
        )
        for model in models:
            first = len(rows)
            for tier in compared:
                parts = (tier,) if by_tier else (STANDARD, BATCH)
                found = [est_usd[(label, model, t)] for t in parts if (label, model, t) in est_usd]
                billed = bill_usd.get((label, model, tier))
                if found or billed is not None:
                    rows.append(Row(label, model, tier, sum(found), billed or 0.0))
            priority = est_usd.get((label, model, PRIORITY))
            billed = bill_usd.get((label, model, PRIORITY))
            if priority_billed and (priority is not None or billed is not None):
                rows.append(Row(label, model, PRIORITY, priority or 0.0, billed or 0.0))
            elif priority:
                rows.append(Row(label, model, PRIORITY, priority, None, note="apart: not in the cost report"))
            tokens, billed_tokens = est_tokens.get((label, model)), bill_tokens.get((label, model))
            if tokens is not None or billed_tokens is not None:
                if len(rows) == first:
                    rows.append(Row(label, model, compared[0], None, None, note="tokens only"))
                rows[first] = replace(
                    rows[first], estimated_tokens=tokens or 0, billed_tokens=billed_tokens or 0
                )
            if platform_tokens.get((label, model)):
                rows.append(
                    Row(
                        label,
                        model,
                        PLATFORM,
                        None,
                        None,
                        platform_tokens[(label, model)],
                        None,
                        note="apart: billed by the platform",
                    )
                )
        for (d, kind), usd in sorted(other.items()):
            if d == label:
                rows.append(Row(label, f"({kind.replace('_', ' ')})", "-", None, usd, note="not estimated"))
        if final_until is not None and day.end > final_until:
            for i in range(day_start, len(rows)):
                if rows[i].difference is not None:
                    rows[i] = replace(rows[i], final=False, note="bill not final yet")
    return rows


def render(rows: list[Row], days: list[Day], tolerance: float, sources: str) -> str:
    head = [
        "day",
        "model",
        "tier",
        "estimated USD",
        "billed USD",
        "difference",
        "tokens est.",
        "tokens billed",
        "",
    ]
    table = [head]
    flagged = compared = 0
    for row in rows:
        diff = row.difference
        flag = row.off_by_more_than(tolerance)
        if diff is not None and row.final:
            compared += 1
            flagged += flag
        if diff is not None and abs(diff) < 5e-5:
            diff = 0.0  # float noise prints as -0.0000 otherwise
        if diff is None:
            change = "-"
        elif row.billed_usd:
            change = f"{diff:+.4f} ({diff / row.billed_usd * 100:+.2f}%)"
        else:
            change = f"{diff:+.4f}"
        table.append(
            [
                row.day,
                printable(row.model, 80),
                row.tier,
                "-" if row.estimated_usd is None else f"{row.estimated_usd:.4f}",
                "-" if row.billed_usd is None else f"{row.billed_usd:.4f}",
                change,
                "-" if row.estimated_tokens is None else f"{row.estimated_tokens:,}",
                "-" if row.billed_tokens is None else f"{row.billed_tokens:,}",
                f"OFF BY >{tolerance:g}%" if flag else row.note,
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    right = {3, 4, 5, 6, 7}
    lines = [
        f"Reconciliation of {days[0].label} .. {days[-1].label} (complete UTC days)"
        if days
        else "No complete day to compare.",
        sources,
        "",
    ]
    for r in table:
        lines.append(
            "  ".join(
                c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)
            ).rstrip()
        )
    lines += ["", f"{flagged} of {compared} compared rows differ by more than {tolerance:g}%."]
    return "\n".join(lines) + "\n"
