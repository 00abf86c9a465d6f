"""YAML text -> plain data, accepting only what a configuration needs and refusing the rest while reading.

A configuration is mappings, lists, strings, numbers, booleans and nulls, with anchors, aliases and merge
keys (``<<: *defaults``) to share settings. Everything else YAML 1.1 can say is refused with the key path
where it stands: explicit tags other than the core ones (``!!set``, ``!!timestamp``, ``!!binary``,
``!!python/...``, local ``!tags``), a core tag on a value that is not of its kind (``!!bool maybe``), and
numbers of more than :data:`MAX_NUMBER_CHARS` characters. Sexagesimal numbers (``1:30`` is 90 in YAML 1.1)
and implicit timestamps are plain strings here, as in YAML 1.2.

The limits are enforced while the document is composed, event by event, so a hostile file under the size
cap costs at most :data:`MAX_YAML_NODES` values of work before it is refused: nesting deeper than
:data:`MAX_YAML_DEPTH`, more than :data:`MAX_YAML_NODES` values (which bounds every list and mapping too),
and, once composed, more than that many values with every alias expanded (an alias bomb).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    Event,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from claude_exporter.config.schema import child, render

__all__ = [
    "MAX_NUMBER_CHARS",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "YAMLRefused",
    "parse_yaml",
    "yaml_error_line",
]

MAX_YAML_NODES = 50_000  # values, composed or reached through aliases: a 500-byte alias bomb is billions
MAX_YAML_DEPTH = 64
MAX_NUMBER_CHARS = 64  # a float holds 17 significant digits: a 400-digit number is a mistake, or an attack

_T = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (f"{_T}{k}" for k in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP, _MERGE = f"{_T}seq", f"{_T}map", f"{_T}merge"

# YAML 1.1's forms as PyYAML reads them, without sexagesimal numbers.
_BOOL_RE = re.compile(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT_RE = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_DECIMAL_RE = re.compile(r"^[-+]?[0-9][0-9_]*$")  # what an explicit !!float also takes


def _to_bool(text: str) -> bool:
    return text.lower() in ("yes", "true", "on")


def _to_int(text: str) -> int:
    value = text.replace("_", "")
    sign = -1 if value[:1] == "-" else 1
    value = value.lstrip("+-")
    if value == "0":
        return 0
    if value.startswith("0b"):
        return sign * int(value[2:], 2)
    if value.startswith("0x"):
        return sign * int(value[2:], 16)
    if value.startswith("0"):
        return sign * int(value, 8)
    return sign * int(value)


def _to_float(text: str) -> float:
    value = text.replace("_", "").lower()
    sign = -1.0 if value[:1] == "-" else 1.0
    value = value.lstrip("+-")
    if value == ".inf":
        return sign * float("inf")
    if value == ".nan":
        return float("nan")
    return sign * float(value)


# The scalar tags a configuration may hold: (the texts an explicit tag accepts, the conversion).
_SCALARS: dict[str, tuple[Callable[[str], bool], Callable[[str], object]]] = {
    _STR: (lambda text: True, str),
    _NULL: (lambda text: _NULL_RE.match(text) is not None, lambda text: None),
    _BOOL: (lambda text: _BOOL_RE.match(text) is not None, _to_bool),
    _INT: (lambda text: _INT_RE.match(text) is not None, _to_int),
    _FLOAT: (lambda text: bool(_FLOAT_RE.match(text) or _DECIMAL_RE.match(text)), _to_float),
}
_KINDS = {_STR: "a string", _NULL: "null", _BOOL: "a boolean", _INT: "an integer", _FLOAT: "a number"}
_ACCEPTED = "!!str, !!int, !!float, !!bool, !!null, !!seq and !!map"


class YAMLRefused(ValueError):
    """A document refused while reading: ``path`` is the key path of the value ("" for the document),
    ``mark`` the value's line and column (from 1), when known."""

    def __init__(self, path: str, what: str, mark: Any = None) -> None:
        self.path, self.what = path, what
        self.mark = None if mark is None else (mark.line + 1, mark.column + 1)
        super().__init__(f"{path or '(document)'}: {what}")

    def line(self, source: str) -> str:
        """The problem as ``FILE:LINE:COLUMN: key.path: what``."""
        where = source if self.mark is None else f"{source}:{self.mark[0]}:{self.mark[1]}"
        return f"{where}: {self.path}: {self.what}" if self.path else f"{where}: {self.what}"


class _Resolver(BaseResolver):
    """YAML 1.1's implicit types as PyYAML resolves them, less timestamps, base 60 and ``=``."""


for _tag, _regexp, _first in (
    (_BOOL, _BOOL_RE, "yYnNtTfFoO"),
    (_FLOAT, _FLOAT_RE, "-+0123456789."),
    (_INT, _INT_RE, "-+0123456789"),
    (_MERGE, re.compile(r"^(?:<<)$"), "<"),
    (_NULL, _NULL_RE, ["~", "n", "N", ""]),
):
    _Resolver.add_implicit_resolver(_tag, _regexp, list(_first))


def _construct_scalar(constructor: SafeConstructor, node: ScalarNode) -> object:
    return _SCALARS[node.tag][1](node.value)


class _Constructor(SafeConstructor):
    """The safe constructor with only the core tags (the composer refuses others before they get here)."""

    yaml_constructors = {  # noqa: RUF012 - PyYAML's own class attribute, replaced not extended
        **{tag: SafeConstructor.yaml_constructors[tag] for tag in (_STR, _SEQ, _MAP, None)},
        **{tag: _construct_scalar for tag in (_NULL, _BOOL, _INT, _FLOAT)},
    }

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Note keys given twice in one mapping (PyYAML silently keeps the last)."""
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE or not isinstance(key_node, ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                self.duplicates.append(
                    (line, f"{self.source}:{line}: duplicate key {render(key)} (first on line {seen[key]})")
                )
            else:
                seen[key] = line
        return super().construct_mapping(node, deep)


_KEY = object()  # in a path: the key being composed
_N = TypeVar("_N", bound=Node)


def _short(tag: str) -> str:
    return "!!" + tag[len(_T) :] if tag.startswith(_T) else tag


class _Composer:
    """PyYAML's composer (yaml/composer.py), counting values and depth as it goes and checking tags and
    numbers where they stand; the events come from a parser mixed in beside it, libyaml's or PyYAML's."""

    if TYPE_CHECKING:  # supplied by the parser and resolver classes a loader mixes in

        def check_event(self, *choices: type[Event]) -> bool: ...
        def peek_event(self) -> Any: ...
        def get_event(self) -> Any: ...
        def resolve(self, kind: type[Node], value: str | None, implicit: Any) -> str: ...

    def __init__(self) -> None:
        self.anchors: dict[str, Node] = {}
        self.count = 0
        self.path: list[object] = []  # the keys and indexes down to the value being composed
        self.mark: Any = None  # where that value starts

    def where(self) -> str:
        path = ""
        for key in self.path:
            if key is _KEY:
                path = f"{path} (a key)" if path else "(a key)"
            else:
                path = child(path, key) if isinstance(key, str) else f"{path}[{render(key)}]"
            if len(path) > 120:  # a path 64 levels deep says no more than its start
                return path[:117] + "..."
        return path

    def refuse(self, what: str) -> YAMLRefused:
        return YAMLRefused(self.where(), what, self.mark)

    def get_single_node(self) -> Node | None:
        self.get_event()  # the stream's start
        document: Node | None = None
        if not self.check_event(StreamEndEvent):
            self.get_event()  # the document's start
            document = self.compose_node()
            self.get_event()  # its end
            self.anchors = {}
        if not self.check_event(StreamEndEvent):
            event = self.get_event()
            start: Any = None if document is None else document.start_mark
            raise ComposerError(
                "expected a single document in the stream",
                start,
                "but found another document",
                event.start_mark,
            )
        self.get_event()
        return document

    def compose_node(self) -> Node:
        event: Any = self.get_event()
        self.mark = event.start_mark
        if isinstance(event, AliasEvent):
            if event.anchor not in self.anchors:
                mark: Any = event.start_mark
                raise ComposerError(None, None, f"found undefined alias {event.anchor!r}", mark)
            return self.anchors[event.anchor]
        self.count += 1
        if self.count > MAX_YAML_NODES:
            raise self.refuse(
                f"the document holds over {MAX_YAML_NODES} values, too many for a configuration"
            )
        if len(self.path) >= MAX_YAML_DEPTH:
            raise self.refuse(f"the document is nested over {MAX_YAML_DEPTH} levels deep")
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                self.anchors[anchor].start_mark,
                "second occurrence",
                event.start_mark,
            )
        node: Node
        if isinstance(event, ScalarEvent):
            node = self.scalar(event)
        elif isinstance(event, SequenceStartEvent):
            node = self.sequence(event)
        else:
            node = self.mapping(event)
        return node

    def tag(self, event: Any, kind: type[Node], allowed: tuple[str, ...], what: str) -> str:
        """The event's tag, resolved if it has none; an explicit one only among ``allowed``."""
        tag = event.tag
        if tag is None or tag == "!":
            return self.resolve(kind, event.value if kind is ScalarNode else None, event.implicit)
        if tag in allowed:
            return str(tag)
        if tag in (*_SCALARS, _SEQ, _MAP):
            raise self.refuse(f"the tag {_short(tag)} cannot mark {what}")
        raise self.refuse(
            f"the tag {render(_short(tag))} is not accepted in a configuration (only {_ACCEPTED})"
        )

    def scalar(self, event: Any) -> ScalarNode:
        tag = self.tag(event, ScalarNode, tuple(_SCALARS), "a plain value")
        if tag == _MERGE:  # only a plain << resolves to it; merges are the constructor's
            return self.node(ScalarNode(tag, event.value, event.start_mark, event.end_mark), event.anchor)
        fits, convert = _SCALARS[tag]
        if event.tag not in (None, "!") and not fits(event.value):
            raise self.refuse(f"{render(event.value)} is not {_KINDS[tag]} (tag {_short(tag)})")
        if tag in (_INT, _FLOAT):
            if len(event.value) > MAX_NUMBER_CHARS:
                size = len(event.value)
                raise self.refuse(
                    f"a number of {size} characters; a configuration's have {MAX_NUMBER_CHARS} at most"
                )
            try:
                convert(event.value)
            except ValueError:  # 0b_, 0o8, ._: the form of a number without one
                raise self.refuse(f"{render(event.value)} is not a number") from None
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        return self.node(node, event.anchor)

    def node(self, node: _N, anchor: str | None) -> _N:
        if anchor is not None:
            self.anchors[anchor] = node
        return node

    def sequence(self, start: Any) -> SequenceNode:
        tag = self.tag(start, SequenceNode, (_SEQ,), "a list")
        node = self.node(
            SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style), start.anchor
        )
        index = 0
        while not self.check_event(SequenceEndEvent):
            self.path.append(index)
            node.value.append(self.compose_node())
            self.path.pop()
            index += 1
        node.end_mark = self.get_event().end_mark
        return node

    def mapping(self, start: Any) -> MappingNode:
        tag = self.tag(start, MappingNode, (_MAP,), "a mapping")
        node = self.node(
            MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style), start.anchor
        )
        while not self.check_event(MappingEndEvent):
            self.path.append(_KEY)  # a key is a level down too: a list as a key nests like a value
            key = self.compose_node()
            if isinstance(key, ScalarNode) and key.tag in _SCALARS:
                self.path[-1] = _SCALARS[key.tag][1](key.value)
            value = self.compose_node()
            self.path.pop()
            node.value.append((key, value))
        node.end_mark = self.get_event().end_mark
        return node


def _children(node: Node) -> list[tuple[object, Node]]:
    if isinstance(node, SequenceNode):
        return list(enumerate(node.value))
    if isinstance(node, MappingNode):
        return [("?", k) for k, _ in node.value] + [
            (k.value if isinstance(k, ScalarNode) else "?", v) for k, v in node.value
        ]
    return []


def _check_expansion(root: Node) -> None:
    """Refuse an alias bomb before anything is built from it: count the values and levels with every
    alias expanded (memoised: one visit per distinct node), and refuse a value that contains itself."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[Node, str, bool]] = [(root, "", False)]
    while stack:
        node, path, done = stack.pop()
        key = id(node)
        if done:
            ancestors.discard(key)
            children = [id(c) for _, c in _children(node)]
            size[key] = total = 1 + sum(size[c] for c in children)
            height[key] = 1 + max((height[c] for c in children), default=0)
            if total > MAX_YAML_NODES:
                raise YAMLRefused(
                    "", f"the document expands to over {MAX_YAML_NODES} values through its aliases"
                )
            if height[key] > MAX_YAML_DEPTH:
                what = f"is nested over {MAX_YAML_DEPTH} levels deep through its aliases"
                raise YAMLRefused(path, what, node.start_mark)
            continue
        if key in size:
            continue
        if key in ancestors:
            raise YAMLRefused(path, "an alias refers to a value that contains it", node.start_mark)
        ancestors.add(key)
        stack.append((node, path, True))
        stack.extend(
            (c, child(path, k) if isinstance(k, str) else f"{path}[{k}]", False)
            for k, c in _children(node)
            if id(c) not in size
        )


class _PyLoader(Reader, Scanner, Parser, _Composer, _Constructor, _Resolver):
    def __init__(self, stream: bytes, source: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Composer.__init__(self)
        _Constructor.__init__(self, source)
        _Resolver.__init__(self)


_Loader: Callable[[bytes, str], Any] = _PyLoader
if yaml.__with_libyaml__:  # libyaml parses events in C, about 20 times faster; composing stays ours
    from yaml._yaml import CParser

    class _CLoader(_Composer, CParser, _Constructor, _Resolver):
        def __init__(self, stream: bytes, source: str) -> None:
            CParser.__init__(self, stream)
            _Composer.__init__(self)
            _Constructor.__init__(self, source)
            _Resolver.__init__(self)

    _Loader = _CLoader


def parse_yaml(
    text: bytes, source: str, *, loader: Callable[[bytes, str], Any] | None = None
) -> tuple[object, list[str]]:
    """Parse one YAML document; return it and the duplicate-key problems.

    Raises ``yaml.YAMLError`` for bad syntax and :class:`YAMLRefused` for a document a configuration cannot
    be. ``loader``: the pure-Python loader for tests (default: libyaml's parser where it is installed).
    """
    reading = (loader or _Loader)(text, source)
    try:
        node = reading.get_single_node()
        if node is None:
            return None, []
        _check_expansion(node)
        data = reading.construct_document(node)
        return data, [problem for _, problem in sorted(reading.duplicates)]
    finally:
        reading.dispose()


def yaml_error_line(err: yaml.YAMLError, source: str) -> str:
    """A YAML syntax error as ``file:line:column: invalid YAML: problem``."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        what = "; ".join(str(p) for p in (err.context, err.problem) if p)
        return f"{where}: invalid YAML: {what}"
    if isinstance(err, yaml.reader.ReaderError):
        return f"{source}: invalid YAML: {err.reason} at byte {err.position}"
    return f"{source}: invalid YAML: {err}"
