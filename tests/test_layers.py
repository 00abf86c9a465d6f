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


# The one recording module that writes prometheus_client's multiprocess file format.
FILE_FORMAT = PACKAGE / "recording" / "storage" / "mmap.py"


@pytest.mark.parametrize("path", modules("recording"), ids=lambda p: p.name)
def test_recording_imports_neither_the_sdk_nor_prometheus_client(path: Path) -> None:
    allowed = {"prometheus_client"} if path == FILE_FORMAT else set()
    assert not imported(path) & (SDK | {"prometheus_client"}) - allowed


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


# The package's own layers, lowest first: a module may import its own layer's modules and any layer ranked
# below its own, never one ranked level or above (instrumentation -> recording <- exposition, ingest ->
# recording; the wiring above them; the entry points on top).
RANKS: dict[str, int] = {
    "_version": 0,
    "families": 0,
    "config": 1,
    "rules": 2,
    "recording": 2,
    "exposition": 3,
    "ingest": 3,
    "server": 4,
    "lifecycle": 5,
    "instrumentation": 6,
    "__init__": 7,
    "testing": 8,
    "cli": 9,
    "__main__": 10,
}


def own_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports at run time: anywhere in it (a function's lazy import
    included), but not under ``if TYPE_CHECKING:``, which only the type checker runs."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            typing_only.update(id(inner) for child in node.body for inner in ast.walk(child))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = module_name(path).split(".")
            base = base[: len(base) - node.level + (path.name == "__init__.py")]
            out.add(".".join([*base, node.module] if node.module else base))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("claude_exporter"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("claude_exporter"))
    return out


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(path): own_imports(path) for path in package.rglob("*.py")}


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} -> {target}"
        for module, targets in edges.items()
        for target in targets
        if layer(target) != layer(module) and RANKS[layer(target)] >= RANKS[layer(module)]
    )


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), an import cycle each."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in edges:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_layer_is_ranked() -> None:
    assert {layer(module) for module in graph()} <= set(RANKS)


def test_no_module_imports_a_layer_at_or_above_its_own() -> None:
    assert upward(graph()) == []


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_the_layer_check_fails_on_an_upward_import_and_a_cycle() -> None:
    edges = graph()
    edges["claude_exporter.recording.recorder"].add("claude_exporter.exposition.collectors")
    assert upward(edges) == ["claude_exporter.recording.recorder -> claude_exporter.exposition.collectors"]
    assert cycles(edges)  # collectors imports the recorder: the added edge closes a cycle
    edges = graph()
    edges["claude_exporter.recording.usage"].add("claude_exporter.recording.labels")
    assert upward(edges) == []  # within one layer: allowed, but labels imports usage
    assert cycles(edges) == [["claude_exporter.recording.labels", "claude_exporter.recording.usage"]]
