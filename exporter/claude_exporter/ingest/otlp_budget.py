"""How many objects an OTLP body would decode into, counted before it is decoded.

Bytes alone do not bound memory: 8 MiB of empty log records (2 bytes each on the wire) made 4 million
protobuf messages, +400 MB and 6 s of CPU for one request. So a body may also hold at most
:data:`MAX_OBJECTS` objects, counted on the bytes before anything is built:

- protobuf: every message (request, resource, record, data point, attribute, value ...) by a walk of the
  wire format that the message descriptors guide, stopping as soon as the budget is passed; a packed
  run of numbers counts one object per 8 bytes. Each message takes at least 2 bytes on the wire, so a
  body under ``2 * MAX_OBJECTS`` bytes is within the budget without a walk (Claude Code's 512-record
  batches are 240-310 KB).
- JSON: the ``{``, ``[`` and ``,`` in the text, a bound on its objects, arrays and values counted at C
  speed (those inside strings count too; real bodies stay far below the budget).

A body over the budget is refused whole with 413 naming the limit, before any object is made.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_OBJECTS", "BudgetError", "json_objects", "protobuf_objects"]

# Claude Code's 512-record batch counts 15,000-23,000 (protobuf messages) and 32,000-46,000 (JSON).
MAX_OBJECTS = 200_000
_MAX_DEPTH = 64  # messages inside messages (AnyValue lists nest); protobuf's own limit is 100
_PACKED = 8  # bytes of a packed run of numbers that count as one object
_ABSENT: Any = object()

# field number -> the field's own table (a message), None (packed numbers); strings are absent
_Table = dict[int, Any]
_TABLES: dict[str, _Table] = {}


class BudgetError(ValueError):
    """A body that would decode into more than the budget's objects (``over``), or that cannot be counted
    because it is not protobuf at all (then the decoder would refuse it too)."""

    def __init__(self, message: str, over: bool = True) -> None:
        super().__init__(message)
        self.over = over


def _table(descriptor: Any) -> _Table:
    """Which fields of a message are messages or packed numbers (from its descriptor, once)."""
    from google.protobuf.descriptor import FieldDescriptor

    found = _TABLES.get(descriptor.full_name)
    if found is not None:
        return found
    table: _Table = {}
    _TABLES[descriptor.full_name] = table  # before the fields: messages refer to themselves (AnyValue)
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            table[field.number] = _table(field.message_type)
        elif field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            table[field.number] = None  # a number: length-delimited only as a packed run
    return table


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 127) << shift
        if byte < 128:
            return value, i
        shift += 7
        if shift > 63:
            raise BudgetError("a varint longer than 10 bytes", over=False)


def _walk(data: bytes, i: int, end: int, table: _Table, left: int, depth: int) -> int:
    """The budget ``left`` after the fields in ``data[i:end]``; negative once passed (then it stops)."""
    if depth > _MAX_DEPTH:
        raise BudgetError(f"messages nested over {_MAX_DEPTH} deep", over=False)
    while i < end:
        tag = data[i]  # one byte for nearly every tag and length: the fast path
        i += 1
        if tag >= 128:
            tag, i = _varint(data, i - 1)
        kind = tag & 7
        if kind == 2:
            size = data[i]
            i += 1
            if size >= 128:
                size, i = _varint(data, i - 1)
            if i + size > end:
                raise BudgetError("a field runs past the end of its message", over=False)
            sub = table.get(tag >> 3, _ABSENT)
            if sub is None:
                left -= size // _PACKED
            elif sub is not _ABSENT:
                left = _walk(data, i, i + size, sub, left - 1, depth + 1)
            i += size
        elif kind == 0:
            i = _varint(data, i)[1]
        elif kind == 1:
            i += 8
        elif kind == 5:
            i += 4
        else:
            raise BudgetError(f"wire type {kind} (groups are not OTLP)", over=False)
        if left < 0:
            return left
    if i > end:
        raise BudgetError("a field runs past the end of its message", over=False)
    return left


def protobuf_objects(data: bytes, descriptor: Any, limit: int = MAX_OBJECTS) -> None:
    """Raise :class:`BudgetError` when protobuf ``data`` holds over ``limit`` messages."""
    if len(data) // 2 + 1 <= limit:
        return
    try:
        left = _walk(data, 0, len(data), _table(descriptor), limit - 1, 0)
    except IndexError:
        raise BudgetError("a field runs past the end of the body", over=False) from None
    if left < 0:
        raise BudgetError(f"more than {limit} objects (records, data points, attributes, values)")


def json_objects(text: bytes, limit: int = MAX_OBJECTS) -> None:
    """Raise :class:`BudgetError` when the JSON ``text`` may hold over ``limit`` objects and values."""
    if len(text) <= limit:
        return
    if text.count(b"{") + text.count(b"[") + text.count(b",") > limit:
        raise BudgetError(f"more than {limit} objects (records, data points, attributes, values)")
