"""Every test carries exactly one tier marker (conftest.py refuses a run otherwise), and pyproject.toml
registers the tiers the Makefile selects with ``-m``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import TIERS, tier_problems

pytestmark = pytest.mark.unit


@dataclass
class FakeItem:
    nodeid: str
    marks: list[Any] = field(default_factory=list)

    def iter_markers(self) -> list[Any]:
        return self.marks


def test_a_test_without_a_tier_or_with_two_is_named() -> None:
    items = [
        FakeItem("t.py::untiered", [pytest.mark.parametrize("x", [1]).mark]),
        FakeItem("t.py::two", [pytest.mark.unit.mark, pytest.mark.system.mark]),
        FakeItem("t.py::one", [pytest.mark.integration.mark]),
    ]
    assert tier_problems(items) == ["t.py::untiered: no tier marker", "t.py::two: system and unit"]  # type: ignore[arg-type]


def test_every_collected_test_of_this_session_has_one_tier(request: pytest.FixtureRequest) -> None:
    assert tier_problems(request.session.items) == []
    assert {m.name for item in request.session.items for m in item.iter_markers() if m.name in TIERS}


def test_the_tiers_are_registered_and_markers_are_strict(request: pytest.FixtureRequest) -> None:
    assert "--strict-markers" in request.config.getini("addopts")
    assert {line.split(":", 1)[0] for line in request.config.getini("markers")} >= set(TIERS)
