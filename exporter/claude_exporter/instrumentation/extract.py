"""Pure functions from SDK objects to what the recording layer needs. No prometheus import here.

They read attributes with ``getattr`` and switch on ``.type`` strings, so first-party, beta, Bedrock and
Vertex objects (and content block types newer than this code) all pass through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import httpx2
from anthropic import AnthropicError, APITimeoutError

__all__ = [
    "CODE_RESULT_TOOLS",
    "client_code_blocks",
    "code_block_outcome",
    "code_blocks",
    "error_message",
    "retry_reason",
]

# Result block type -> the server tool that produced it (the tool label).
CODE_RESULT_TOOLS: dict[str, str] = {
    "code_execution_tool_result": "code_execution",
    "bash_code_execution_tool_result": "bash_code_execution",
    "text_editor_code_execution_tool_result": "text_editor_code_execution",
}


def code_block_outcome(block: Any) -> tuple[str, str] | None:
    """``(tool, outcome)`` for a server code-execution result block, else None."""
    tool = CODE_RESULT_TOOLS.get(getattr(block, "type", ""))
    if tool is None:
        return None
    content = getattr(block, "content", None)
    kind = getattr(content, "type", "")
    if kind.endswith("_tool_result_error"):
        return tool, "tool_error"
    return_code = getattr(content, "return_code", None)
    if return_code is not None and return_code != 0:
        return tool, "nonzero_exit"
    return tool, "success"


def code_blocks(content: Iterable[Any] | None) -> Iterator[tuple[str, str]]:
    """Every code-execution outcome in a message's content."""
    for block in content or ():
        found = code_block_outcome(block)
        if found is not None:
            yield found


def client_code_blocks(messages: Any, tools: frozenset[str]) -> Iterator[tuple[str, str]]:
    """Outcomes of client-side code tools from the request: the last user turn's ``tool_result``
    blocks whose ``tool_use_id`` the previous assistant turn gave to one of ``tools``.

    ``is_error`` results are tool errors; everything else counts as success (a client tool has no
    return code the API can see).
    """
    if not isinstance(messages, (list, tuple)) or len(messages) < 2:
        return
    last, previous = messages[-1], messages[-2]
    if _get(last, "role") != "user" or _get(previous, "role") != "assistant":
        return
    names: dict[str, str] = {}
    for block in _content(previous):
        if _get(block, "type") == "tool_use" and _get(block, "name") in tools:
            names[str(_get(block, "id"))] = str(_get(block, "name"))
    if not names:
        return
    for block in _content(last):
        if _get(block, "type") != "tool_result":
            continue
        tool = names.get(str(_get(block, "tool_use_id")))
        if tool is not None:
            yield tool, "tool_error" if _get(block, "is_error") else "success"


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _content(message: Any) -> list[Any]:
    content = _get(message, "content")
    return content if isinstance(content, list) else []


def error_message(exc: BaseException | None) -> str | None:
    """The message for the event log: the SDK's errors only (the API's answer); an application's own
    exception may quote a prompt, so its message is never taken."""
    if exc is None or not isinstance(exc, AnthropicError):
        return None
    return str(exc)


def retry_reason(exc: BaseException) -> str:
    """The reason label of a retry caused by an exception rather than a status."""
    return "timeout" if isinstance(exc, (APITimeoutError, httpx2.TimeoutException)) else "connection"
