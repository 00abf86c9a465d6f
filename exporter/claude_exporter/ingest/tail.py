"""``claude-exporter serve --tail FILE``: follow a JSON log file like ``tail -F`` and ingest its events.

Each complete line that is a JSON object whose ``event`` is one of ours (``claude_execution_complete``,
``claude_execution_error``) is checked with :func:`~claude_exporter.ingest.parse_event` and applied;
``claude_exporter_events_total{source="tail"}`` counts it as accepted or rejected. Every other line (console
output, other JSON) is skipped silently: the file is usually an application's whole stdout.

Following survives what log rotation does to a file:

- rename and re-create (logrotate's default, or a new container log): the path names another inode; the old
  file is read to its end, then the new one from its start;
- truncation (``copytruncate``, ``: > file``): the file is shorter than the read position, or the bytes
  just before it are no longer the ones read there (rewritten past the old size within one poll); reading
  restarts at 0. NUL bytes at the start of a line (the hole a writer without ``O_APPEND`` leaves after
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
from pathlib import Path
from typing import IO

from claude_exporter.ingest.events import KINDS, MAX_BODY, Event, apply_events, parse_event
from claude_exporter.recording.recorder import Recorder

__all__ = ["POLL_INTERVAL", "LogFollower"]

POLL_INTERVAL = 0.2
_CHUNK = 1 << 16
_MAX_READ = 8 << 20  # bytes per poll
# A line longer than the HTTP body limit is no event of ours; dropping it bounds the buffer.
MAX_LINE = MAX_BODY
_MARK = 64  # bytes before the read position remembered, to notice a file rewritten between two polls


class LogFollower:
    """Follows one file; :meth:`poll_once` reads what is new, :meth:`start` does so in a thread.

    ``from_start``: read the lines already in the file (default: only lines written from now on, like
    ``tail -F -n 0``). A file that does not exist yet is always read from its start once it appears.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        recorder: Recorder,
        *,
        from_start: bool = False,
        source: str = "tail",
    ) -> None:
        self.path = Path(path)
        self.source = source
        self._rec = recorder
        self._file: IO[bytes] | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._buffer = b""
        self._skipping = False  # inside an over-long line: drop bytes until its newline
        self._mark = b""  # the bytes just before the read position, as read
        self._lock = threading.Lock()  # poll_once from a test and from the thread never interleave
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.accepted = 0
        self.rejected = 0
        self.behind = False  # the last poll stopped at its budget before the end of the file
        # The end position is fixed now, not at the first poll, so nothing written after start-up is lost.
        self._open(at_end=not from_start)

    # -- the file ----------------------------------------------------------------------------------------

    def _open(self, *, at_end: bool) -> bool:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - kept open across polls, closed in _close
        except OSError:  # not there (yet), or not readable for now: try again at the next poll
            return False
        info = os.fstat(handle.fileno())
        if at_end:
            handle.seek(0, os.SEEK_END)
        self._file, self._identity = handle, (info.st_dev, info.st_ino)
        self._buffer, self._skipping = b"", False
        self._remember()
        return True

    def _remember(self) -> None:
        assert self._file is not None
        end = self._file.tell()
        start = max(0, end - _MARK)
        self._mark = os.pread(self._file.fileno(), end - start, start)

    def _rewritten(self) -> bool:
        """Whether the bytes before the read position changed: truncated, maybe regrown past it since."""
        assert self._file is not None
        end = self._file.tell()
        if not self._mark:
            return False
        return os.pread(self._file.fileno(), len(self._mark), end - len(self._mark)) != self._mark

    def _restart(self) -> None:
        assert self._file is not None
        self._file.seek(0)
        self._buffer, self._skipping, self._mark = b"", False, b""

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._identity = None, None

    def _read_available(self) -> list[bytes]:
        """Complete lines from the open file's position to its end, or to the per-poll budget."""
        assert self._file is not None
        lines: list[bytes] = []
        budget = _MAX_READ
        self.behind = False
        while chunk := self._file.read(min(_CHUNK, budget)):
            budget -= len(chunk)
            # A NUL hole (copytruncate under a writer without O_APPEND) is no part of the line after it.
            data = (self._buffer + chunk).lstrip(b"\0") if not self._buffer else self._buffer + chunk
            *complete, self._buffer = data.split(b"\n")
            self._buffer = self._buffer.lstrip(b"\0")
            if complete and self._skipping:  # the rest of an over-long line ends here
                complete, self._skipping = complete[1:], False
            lines.extend(complete)
            if len(self._buffer) > MAX_LINE:
                self._buffer, self._skipping = b"", True
            if budget <= 0:  # a big file read from its start: the next poll goes on, memory stays bounded
                self.behind = True
                break
        self._remember()
        return lines

    def poll_once(self) -> int:
        """Read and ingest whatever is new; returns how many events were accepted (0 once stopped)."""
        with self._lock:
            if self._stop.is_set():
                return 0
            return self._ingest(self._poll_lines())

    def _poll_lines(self) -> list[bytes]:
        if self._file is None:
            return self._read_available() if self._open(at_end=False) else []
        if self._rewritten():  # judged before reading, or the new content would be read from mid-file
            self._restart()
        lines = self._read_available()
        if self.behind:  # not at the end yet: rotation and truncation are judged there
            return lines
        try:
            info = os.stat(self.path)
        except OSError:  # renamed away and not re-created yet: keep the old file, a writer may still append
            return lines
        if (info.st_dev, info.st_ino) != self._identity:
            # Rotated: the old file is finished (read to its end just above), and a last line without its
            # newline will never get one.
            if self._buffer and not self._skipping:
                lines.append(self._buffer)
            self._close()
            if self._open(at_end=False):
                lines.extend(self._read_available())
        elif self._file is not None and info.st_size < self._file.tell():
            # Truncated in place: what follows the new end is new content, from offset 0.
            self._restart()
            lines.extend(self._read_available())
        return lines

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
                self._stop.wait(interval)

    def stop(self) -> None:
        """Stop following for good: end the thread (if any) and close the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self._close()
