"""The anomaly benchmark, short: one labelled day (after a day of history) backfilled into a real
Prometheus, the rules before issue 13 and the bundled rules evaluated over it (benchmarks/anomaly/).
The full week runs with ``make bench-anomaly``; its figures are in docs/anomaly.md.

Bounds the short run must keep (the goal of docs/anomaly.md, on one day): every injected incident caught
within 30 minutes, no false alert of the new rules (one a week per agent would be 5 / 7 on one day for
five agents, so the bound is 0), none in the quiet night, and the new rules catch strictly more than the
old ones with no more false alerts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from stack import require_binary

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "anomaly"))

from evaluate import Episode, Result, evaluate, firing_episodes
from generate import short_plan

DEADLINE_MINUTES = 30


def _series(times: list[int]) -> list[dict[str, object]]:
    return [{"metric": {"agent": "a"}, "values": [[t, "1"] for t in times]}]


@pytest.mark.unit
def test_for_is_applied_as_prometheus_applies_it() -> None:
    # Returned at 0..10 min every minute: pending from 0, firing from 5 (for 5m) to 10.
    (episode,) = firing_episodes("A", _series([m * 60 for m in range(11)]), 300, 60)
    assert (episode.start, episode.end) == (300, 600)
    # A missed evaluation at minute 4 resets the pending alert: firing only from 5 + 5 = 10.
    (late,) = firing_episodes("A", _series([m * 60 for m in range(11) if m != 4]), 300, 60)
    assert (late.start, late.end) == (600, 600)
    # Never returned for 5 minutes in a row: never fires.
    assert not list(firing_episodes("A", _series([0, 60, 120, 240, 300, 360]), 300, 60))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    for tool in ("promtool", "prometheus"):
        require_binary(tool)
    return evaluate(short_plan(), tmp_path_factory.mktemp("anomaly-bench"), log=False)


@pytest.mark.benchmark
def test_new_rules_catch_every_incident_within_30_minutes(results: dict[str, Result]) -> None:
    new = results["new"]
    assert set(new.detected) == {"latency_step", "token_blowup", "retry_storm", "error_burst"}
    for kind, minutes in new.detected.items():
        assert all(m is not None and m <= DEADLINE_MINUTES for m in minutes), (kind, minutes)


@pytest.mark.benchmark
def test_new_rules_raise_no_false_alert_on_the_day(results: dict[str, Result]) -> None:
    new = results["new"]
    assert new.false_alerts == 0, new.false_episodes
    assert new.quiet_night_alerts == 0


@pytest.mark.benchmark
def test_new_rules_are_strictly_better_than_the_old(results: dict[str, Result]) -> None:
    old, new = results["old"], results["new"]
    assert new.recall > old.recall, (old.detected, new.detected)
    assert new.false_alerts <= old.false_alerts


@pytest.mark.benchmark
def test_every_episode_is_judged(results: dict[str, Result]) -> None:
    for result in results.values():
        assert result.true_alerts + result.false_alerts == len(result.episodes)
        assert all(isinstance(e, Episode) and e.start <= e.end for e in result.episodes)
