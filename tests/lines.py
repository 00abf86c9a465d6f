"""Reading a child process's output line by line, with a deadline that cannot hang a test.

Not select() on the pipe: a text-mode readline() buffers every line already written, so select() then
waits for output that is already in the buffer.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable


def read_until(proc: subprocess.Popen[str], done: Callable[[str], bool], timeout: float = 60) -> list[str]:
    """Lines of ``proc``'s standard output up to and including the first for which ``done`` is true.

    Raises AssertionError (with the lines seen) when the output ends first; after ``timeout`` seconds
    the process is killed, which ends its output.
    """
    assert proc.stdout is not None
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if done(line):
                return lines
    finally:
        watchdog.cancel()
    raise AssertionError(
        f"{proc.args} ended (status {proc.poll()}) before the expected line:\n" + "".join(lines)
    )
