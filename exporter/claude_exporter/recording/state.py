"""The process-wide instrumentation state: the active recorder and the current request/execution.

Kept apart so every module can read it without importing the instrumentor.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from claude_exporter.recording.call import Call
    from claude_exporter.recording.execution import Execution
    from claude_exporter.recording.recorder import Recorder

__all__ = ["CURRENT_CALL", "CURRENT_EXECUTION", "STATE"]


class _State:
    __slots__ = ("recorder",)

    def __init__(self) -> None:
        self.recorder: Recorder | None = None


STATE = _State()
# The request in progress, so the middleware can attribute each attempt to it.
CURRENT_CALL: ContextVar[Call | None] = ContextVar("claude_exporter_call", default=None)
# The execution in progress; copied into threads with contextvars.copy_context().
CURRENT_EXECUTION: ContextVar[Execution | None] = ContextVar("claude_exporter_execution", default=None)
