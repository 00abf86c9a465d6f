"""``claude-exporter serve --tail FILE``: follow a JSON log file like ``tail -F`` and ingest its events.

Each complete line that is a JSON object whose ``event`` is one of ours (``claude_execution_complete``,
``claude_execution_error``) is checked with :func:`~claude_exporter.ingest.parse_event` and applied;
``claude_exporter_events_total{source="tail"}`` counts it as accepted or rejected. Every other line (console
output, other JSON) is skipped silently: the file is usually an application's whole stdout.

Following survives what log rotation does to a file:

- rename and re-create (logrotate's default, or a new container log): the path names another inode; the new
  file is read from its start, and the old one stays open and is read on until nothing was added to it for
  ``drain_grace`` seconds (a writer that has not reopened the path yet still appends to it);
- truncation (``copytruncate``, ``: > file``): the file is shorter than the read position, whatever its
  lines, or the bytes just before the position are no longer the ones read there (cut and regrown past it
  with other lines); reading restarts at 0. Between polls the file's size is looked at every
  ``WATCH_INTERVAL`` and a poll starts as soon as it changes, so a cut is seen unless the file grows back
  past the read position within that time with the very same bytes (nothing in the file can tell that
  from an append). NUL bytes at the start of a line (the hole a writer without ``O_APPEND`` leaves after
  ``copytruncate``) are dropped;
- a file that does not exist yet, or disappears for a while: it is read from its start once it appears.

A last line without its newline waits for it: a writer may be half-way through it. Lines are UTF-8 (as
``POST /v1/events`` requires); a line that is not, or is not JSON, is someone else's and skipped. A bad
event is counted as rejected and costs no other line.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import IO

from claude_exporter.ingest.events import KINDS, MAX_BODY, Event, apply_events, parse_event
from claude_exporter.recording.recorder import Recorder

__all__ = ["DRAIN_GRACE", "POLL_INTERVAL", "WATCH_INTERVAL", "LogFollower"]

POLL_INTERVAL = 0.2
# Between polls the open file's size is looked at this often (one fstat), and a poll starts at once when it
# changed: a truncation is seen unless the file grows back past the read position within this time.
WATCH_INTERVAL = 0.05  # 20 looks a second: about 2 ms of CPU a second for each followed file
# A rotated file is read until nothing was added to it for this long: a writer may still be appending.
DRAIN_GRACE = 2.0
_MAX_DRAINING = 4  # rotated files read at once; beyond, the oldest is finished early
_CHUNK = 1 << 16
_MAX_READ = 8 << 20  # bytes per poll
# A line longer than the HTTP body limit is no event of ours; dropping it bounds the buffer.
MAX_LINE = MAX_BODY
_MARK = 64  # bytes before the read position remembered, to notice a file rewritten between two polls


class _Reader:
    """One open file: its position, the partial line read so far, and the bytes just before the position."""

    def __init__(self, handle: IO[bytes], *, at_end: bool) -> None:
        info = os.fstat(handle.fileno())
        if at_end:
            handle.seek(0, os.SEEK_END)
        self.file = handle
        self.identity = (info.st_dev, info.st_ino)
        self.buffer = b""
        self.skipping = False  # inside an over-long line: drop bytes until its newline
        self.mark = b""  # the bytes just before the read position, as read
        self.last_data = time.monotonic()  # when bytes were last read (for draining a rotated file)
        self.remember()

    @classmethod
    def open(cls, path: Path, *, at_end: bool) -> _Reader | None:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - kept open across polls, closed in close()
        except OSError:  # not there (yet), or not readable for now: try again at the next poll
            return None
        return cls(handle, at_end=at_end)

    def remember(self) -> None:
        end = self.file.tell()
        start = max(0, end - _MARK)
        self.mark = os.pread(self.file.fileno(), end - start, start)

    def size(self) -> int:
        return os.fstat(self.file.fileno()).st_size

    def truncated(self) -> bool:
        """Whether the file was cut since the last read: shorter than the read position (whatever its
        content), or the bytes before the position are not the ones read there (cut and regrown past it
        with other lines within one look)."""
        end = self.file.tell()
        if self.size() < end:
            return True
        return (
            bool(self.mark)
            and os.pread(self.file.fileno(), len(self.mark), end - len(self.mark)) != self.mark
        )

    def restart(self) -> None:
        self.file.seek(0)
        self.buffer, self.skipping, self.mark = b"", False, b""

    def read(self, budget: int) -> tuple[list[bytes], bool]:
        """Complete lines from the position to the end or to ``budget`` bytes; and whether it stopped."""
        lines: list[bytes] = []
        behind = False
        while chunk := self.file.read(min(_CHUNK, budget)):
            self.last_data = time.monotonic()
            budget -= len(chunk)
            # A NUL hole (copytruncate under a writer without O_APPEND) is no part of the line after it.
            data = (self.buffer + chunk).lstrip(b"\0") if not self.buffer else self.buffer + chunk
            *complete, self.buffer = data.split(b"\n")
            self.buffer = self.buffer.lstrip(b"\0")
            if complete and self.skipping:  # the rest of an over-long line ends here
                complete, self.skipping = complete[1:], False
            lines.extend(complete)
            if len(self.buffer) > MAX_LINE:
                self.buffer, self.skipping = b"", True
            if budget <= 0:  # a big file read from its start: the next poll goes on, memory stays bounded
                behind = True
                break
        self.remember()
        return lines, behind

    def finish(self) -> list[bytes]:
        """Close a file nobody writes to any more; its last line without a newline will never get one."""
        self.file.close()
        return [self.buffer] if self.buffer and not self.skipping else []


class LogFollower:
    """Follows one file; :meth:`poll_once` reads what is new, :meth:`start` does so in a thread.

    ``from_start``: read the lines already in the file (default: only lines written from now on, like
    ``tail -F -n 0``). A file that does not exist yet is always read from its start once it appears.
    ``drain_grace``: how long a rotated file must stay unchanged before it is closed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        recorder: Recorder,
        *,
        from_start: bool = False,
        source: str = "tail",
        drain_grace: float = DRAIN_GRACE,
    ) -> None:
        self.path = Path(path)
        self.source = source
        self.drain_grace = drain_grace
        self._rec = recorder
        self._lock = threading.Lock()  # poll_once from a test and from the thread never interleave
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._draining: list[_Reader] = []  # rotated files a writer may still append to, oldest first
        self.accepted = 0
        self.rejected = 0
        self.truncations = 0  # times the file was seen cut and read again from its start
        self.rotations = 0  # times the path was seen naming a new file
        self.behind = False  # the last poll stopped at its budget before the end of the file
        # The end position is fixed now, not at the first poll, so nothing written after start-up is lost.
        self._current = _Reader.open(self.path, at_end=not from_start)

    @property
    def draining(self) -> int:
        """How many rotated files are still being read."""
        return len(self._draining)

    def poll_once(self) -> int:
        """Read and ingest whatever is new; returns how many events were accepted (0 once stopped)."""
        with self._lock:
            if self._stop.is_set():
                return 0
            return self._ingest(self._poll_lines())

    def _poll_lines(self) -> list[bytes]:
        self.behind = False
        lines = self._drain()
        current = self._current
        if current is None:
            self._current = current = _Reader.open(self.path, at_end=False)
            if current is None:
                return lines
        elif current.truncated():  # judged before reading, or the new content would be read from mid-file
            current.restart()
            self.truncations += 1
        lines.extend(self._read(current))
        if self.behind:  # not at the end yet: rotation is judged there
            return lines
        try:
            info = os.stat(self.path)
        except OSError:  # renamed away and not re-created yet: keep the old file, a writer may still append
            return lines
        if (info.st_dev, info.st_ino) != current.identity:
            # Rotated: the old file is read on until it stays unchanged for drain_grace (a writer that
            # has not reopened its file yet still appends to it), the new one from its start.
            self.rotations += 1
            self._draining.append(current)
            if len(self._draining) > _MAX_DRAINING:
                lines.extend(self._draining.pop(0).finish())
            self._current = current = _Reader.open(self.path, at_end=False)
            if current is not None:
                lines.extend(self._read(current))
        return lines

    def _read(self, reader: _Reader) -> list[bytes]:
        lines, behind = reader.read(_MAX_READ)
        self.behind = self.behind or behind
        return lines

    def _drain(self) -> list[bytes]:
        lines: list[bytes] = []
        now = time.monotonic()
        for reader in list(self._draining):
            before = reader.last_data
            lines.extend(self._read(reader))
            if reader.last_data == before and now - before >= self.drain_grace:
                self._draining.remove(reader)
                lines.extend(reader.finish())
        return lines

    def _changed(self) -> bool:
        """Whether the open file's size differs from the read position (grown, or cut)."""
        current = self._current
        if current is None or self._lock.locked():
            return False
        try:
            return current.size() != current.file.tell()
        except (OSError, ValueError):  # closed by stop() meanwhile
            return False

    # -- the lines ---------------------------------------------------------------------------------------

    def _ingest(self, lines: list[bytes]) -> int:
        events: list[Event] = []
        rejected = 0
        for raw in lines:
            line = raw.lstrip(b"\0")
            if not line.strip():
                continue
            try:
                # UTF-8 decoded first: json.loads(bytes) would also take UTF-16 and UTF-32.
                obj = json.loads(line.decode("utf-8"))
            except (ValueError, RecursionError):  # console output, a stack trace, not UTF-8: not ours
                continue
            if not isinstance(obj, dict) or obj.get("event") not in KINDS:
                continue  # somebody else's JSON
            found = parse_event(obj)
            if isinstance(found, Event):
                events.append(found)
            else:
                rejected += 1
        if rejected:
            self._rec.events.inc((self.source, "rejected"), rejected)
            self.rejected += rejected
        if events:
            applied = apply_events(self._rec, events)
            self._rec.events.inc((self.source, "accepted"), applied)
            self.accepted += applied
        return len(events)

    # -- the thread --------------------------------------------------------------------------------------

    def start(self, interval: float = POLL_INTERVAL) -> LogFollower:
        """Poll every ``interval`` seconds in a daemon thread until :meth:`stop`."""
        if self._thread is not None or self._stop.is_set():
            return self
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name=f"claude-exporter-tail:{self.path.name}", daemon=True
        )
        self._thread.start()
        return self

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # a disk hiccup must not end the follower; the position is kept
                self._rec.fault("tail")
                self.behind = False
            if not self.behind:  # more to read: no pause
                self._wait(interval)

    def _wait(self, interval: float) -> None:
        """Until the next poll: ``interval``, or less once the file's size changes (a cut is seen early)."""
        deadline = time.monotonic() + interval
        while not self._stop.wait(min(WATCH_INTERVAL, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or self._changed():
                return

    def stop(self) -> None:
        """Stop following for good: end the thread (if any) and close the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            for reader in (*self._draining, self._current):
                if reader is not None:
                    reader.file.close()
            self._draining, self._current = [], None
