"""The layout is the architecture: each subpackage imports only what its layer may."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parent.parent / "exporter" / "claude_exporter"
SDK = {"anthropic", "httpx2", "httpx"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def modules(subpackage: str) -> list[Path]:
    return sorted((PACKAGE / subpackage).rglob("*.py"))


@pytest.mark.parametrize("path", modules("recording"), ids=lambda p: p.name)
def test_recording_imports_neither_the_sdk_nor_prometheus_client(path: Path) -> None:
    assert not imported(path) & (SDK | {"prometheus_client"})


def test_only_instrumentation_and_testing_import_the_sdk() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if imported(path) & SDK
        and path.relative_to(PACKAGE).parts[0] not in {"instrumentation", "testing", "cli"}
    ]
    assert offenders == []


def test_families_is_pure_data() -> None:
    assert imported(PACKAGE / "families.py") <= {"__future__", "collections", "dataclasses"}
