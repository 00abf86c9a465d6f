"""The README's layout tree is generated from the package (tools/readme_layout.py, ``make generate``), and
``make check-generated`` fails when a module is added or removed without the tree changing."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "readme_layout.py"


@pytest.fixture(scope="module")
def layout() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_layout", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def package(tmp_path: Path, layout: ModuleType) -> Path:
    """A copy of the package's sources to add modules to and remove them from."""
    copy = tmp_path / "claude_exporter"
    shutil.copytree(layout.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return copy


def test_the_committed_tree_is_current():
    done = subprocess.run([sys.executable, str(TOOL), "--check"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_every_module_is_in_the_tree_with_its_docstring(layout):
    tree = layout.tree()
    for path in layout.PACKAGE.rglob("*.py"):
        if path.name != "__init__.py" and "__pycache__" not in path.parts:
            assert f" {path.name} " in tree, path  # name, then its description
    assert "admission.py            The one admission rule for label values" in tree


def test_a_module_added_without_the_tree_fails_the_check(layout, package):
    readme = layout.README.read_text(encoding="utf-8")
    assert layout.rendered(readme, package) == readme  # the copy is what the README describes
    (package / "recording" / "newcomer.py").write_text('"""A module nobody told the README about."""\n')
    updated = layout.rendered(readme, package)
    assert updated != readme
    assert "    newcomer.py             A module nobody told the README about." in updated


def test_a_module_removed_without_the_tree_fails_the_check(layout, package):
    readme = layout.README.read_text(encoding="utf-8")
    (package / "ingest" / "tail.py").unlink()
    updated = layout.rendered(readme, package)
    assert updated != readme
    assert " tail.py " not in updated and " tail.py " in readme
