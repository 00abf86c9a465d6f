"""Cumulative writers' state on disk (``exporter.otlp.state_dir``): a restarted serve counts nothing twice.

With cumulative temporality every export carries each series' total since its process started. A
receiver turns totals into increments by remembering each writer's last point; a restarted receiver that
forgot them would count every total again (3 sessions became 6). With a state directory the writers'
last points (a 16-byte digest, a time and a value each: about 80 bytes a writer on disk) are written to
``otlp-writers.json`` there, atomically (a temporary file, fsync, rename), after a batch that moved one
(at most once a second, and never more often than ten times the last write took) and when the recorder
closes; they are read back when the next one opens. A file that cannot be read is counted as the fault
``otlp_state`` and logged with what is wrong, and the receiver starts without it.

Not covered: after a crash, what arrived since the last write (at most about a second) is counted again;
delta points and log records re-sent across a restart are not recognised (the OTLP sender re-sends only a
batch whose answer it lost).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from claude_exporter.ingest.otlp_counting import Deltas

__all__ = ["FILE", "StateError", "WriterState", "read_writers", "write_writers"]

FILE = "otlp-writers.json"
_VERSION = 1
_MIN_INTERVAL = 1.0  # seconds between writes, at least
_SLOWDOWN = 10.0  # and at least this many times the last write's duration

log = logging.getLogger("claude_exporter")

Writers = list[tuple[bytes, int, float]]


class StateError(ValueError):
    """A state file that cannot be read: the message names the file and what is wrong."""


def write_writers(path: Path, writers: Writers) -> None:
    """``writers`` to ``path``, atomically: a reader sees the old file or the new one, never a part."""
    body = json.dumps(
        {"version": _VERSION, "writers": [[key.hex(), at, value] for key, at, value in writers]},
        separators=(",", ":"),
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{FILE}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_writers(path: Path) -> Writers:
    """What :func:`write_writers` wrote; nothing when there is no file yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as err:
        raise StateError(f"{path}: cannot be read ({err})") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise StateError(f"{path}: not JSON ({err})") from None
    if (
        not isinstance(data, dict)
        or data.get("version") != _VERSION
        or not isinstance(data.get("writers"), list)
    ):
        raise StateError(f"{path}: not a state file of version {_VERSION}")
    out: Writers = []
    for n, row in enumerate(data["writers"]):
        try:
            key_hex, at, value = row
            key = bytes.fromhex(key_hex)
            if len(key) != 16 or type(at) is not int or type(value) not in (int, float) or value < 0:
                raise ValueError
        except (TypeError, ValueError):
            raise StateError(
                f"{path}: writers[{n}]: must be [32 hex digits, an integer, a number >= 0]"
            ) from None
        out.append((key, at, float(value)))
    return out


class WriterState:
    """Keeps ``deltas``' cumulative writers in ``directory``: read once here, written by :meth:`save`."""

    def __init__(self, directory: str, deltas: Deltas, fault: Callable[[str], None]) -> None:
        self.path = Path(directory) / FILE
        self._deltas = deltas
        self._fault = fault
        self._lock = threading.Lock()
        self._last = 0.0  # time.monotonic() of the last write
        self._took = 0.0  # how long it took
        try:
            # Made as a data directory is: a missing one would only show as failed writes, one per batch.
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            fault("otlp_state")
            log.warning("claude-exporter: OTLP state directory not made: %s", err)
        try:
            deltas.restore(read_writers(self.path))
        except StateError as err:
            fault("otlp_state")
            log.warning("claude-exporter: OTLP writer state not restored, starting without it: %s", err)
        deltas.changed = False

    def save(self, force: bool = False) -> None:
        """Write the writers if one moved since the last write (and, unless ``force``, the last write is
        old enough); a failure is counted and the next call tries again."""
        if not self._deltas.changed:
            return
        now = time.monotonic()
        if not force and now - self._last < max(_MIN_INTERVAL, _SLOWDOWN * self._took):
            return
        with self._lock:
            writers = self._deltas.dump()
            try:
                write_writers(self.path, writers)
            except OSError as err:
                self._deltas.changed = True
                self._fault("otlp_state")
                log.warning("claude-exporter: OTLP writer state not written: %s", err)
            self._last = time.monotonic()
            self._took = self._last - now
