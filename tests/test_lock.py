"""The committed lock (requirements-dev.lock) is what `make venv` installs: it must satisfy every
requirement pyproject.toml states, on every Python the project supports, with a hash for every pin; and
the anthropic versions a run means (floor, locked, newest) resolve from pyproject.toml and the lock."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools" / "sdk_suite"))
import versions  # noqa: E402

LOCK = REPO / "requirements-dev.lock"
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def pins(text: str) -> dict[str, list[tuple[Version, Marker | None, int]]]:
    """name -> [(version, marker, number of hashes)]; a universal lock may pin a name once per marker."""
    found: dict[str, list[tuple[Version, Marker | None, int]]] = {}
    for entry in re.split(r"\n(?=\S)", text):
        first = entry.split("\\", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        requirement = Requirement(first)
        (spec,) = requirement.specifier  # a lock pins with exactly one `==`
        assert spec.operator == "==", first
        hashes = entry.count("--hash=sha256:")
        found.setdefault(canonicalize_name(requirement.name), []).append(
            (Version(spec.version), requirement.marker, hashes)
        )
    return found


def project_requirements() -> list[Requirement]:
    """[project] dependencies and every optional-dependency group, without the self-references."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    texts = [
        *project["dependencies"],
        *(r for group in project["optional-dependencies"].values() for r in group),
    ]
    return [r for r in map(Requirement, texts) if r.name != project["name"]]


def test_the_lock_parses_and_every_pin_has_a_hash() -> None:
    locked = pins(LOCK.read_text(encoding="utf-8"))
    assert len(locked) > 30  # the whole transitive closure, not just the direct requirements
    unhashed = [name for name, entries in locked.items() for _, _, n in entries if n == 0]
    assert unhashed == []


@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_satisfies_pyproject_on_every_supported_python(python: str) -> None:
    locked = pins(LOCK.read_text(encoding="utf-8"))
    environment = {"python_version": python, "python_full_version": f"{python}.0", "extra": "dev"}
    problems = []
    requirements = project_requirements()
    assert {"anthropic", "prometheus-client", "pytest", "uv"} <= {r.name for r in requirements}
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        versions_here = [
            version
            for version, marker, _ in locked.get(canonicalize_name(requirement.name), [])
            if marker is None or marker.evaluate(environment)
        ]
        if not versions_here:
            problems.append(f"{requirement}: not in the lock for Python {python}")
        elif not all(requirement.specifier.contains(v, prereleases=True) for v in versions_here):
            problems.append(f"{requirement}: the lock pins {versions_here}")
    assert problems == [], "run `make lock`: " + "; ".join(problems)


def test_a_requirement_the_lock_does_not_satisfy_is_named(tmp_path: Path) -> None:
    """The check above can fail: a lock pinning anthropic below the floor is caught."""
    text = LOCK.read_text(encoding="utf-8")
    stale = re.sub(r"(?m)^anthropic==\S+", "anthropic==2.0.0", text)
    locked = pins(stale)
    floor = versions.requirement()
    assert not all(floor.specifier.contains(v) for v, _, _ in locked["anthropic"])


def test_floor_and_newest_come_from_pyproject_and_the_index() -> None:
    index = ["2.9.0", "2.10.0", "2.10.1", "2.11.0rc1", "2.12.0", "not-a-version", "3.0.0.dev1"]
    assert versions.allowed(index, Requirement("anthropic>=2.10,<2.12")) == ["2.10.0", "2.10.1"]
    # The keywords read pyproject.toml's own range (`>=2.10` at the time of writing).
    allowed = versions.allowed(index, versions.requirement())
    assert versions.resolve("floor", index) == allowed[0]
    assert versions.resolve("newest", index) == allowed[-1] == "2.12.0"  # no pre-release, no dev release
    assert versions.resolve("2.11.0") == "2.11.0"


def test_locked_is_what_the_lock_pins_and_duplicates_collapse() -> None:
    (locked_anthropic,) = pins(LOCK.read_text(encoding="utf-8"))["anthropic"]
    assert versions.locked_version() == str(locked_anthropic[0])
    assert versions.resolve_all(["locked", versions.locked_version(), "locked"]) == [
        versions.locked_version()
    ]
