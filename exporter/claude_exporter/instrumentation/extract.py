"""Pure functions from SDK objects to what the recording layer needs. No prometheus import here.

They read attributes with ``getattr`` and switch on ``.type`` strings, so first-party, beta, Bedrock and
Vertex objects (and content block types newer than this code) all pass through.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Iterator
from typing import Any

import httpx2
from anthropic import AnthropicError, APITimeoutError

__all__ = [
    "CACHE_MISS_REASONS",
    "CODE_RESULT_TOOLS",
    "ERROR_CODES",
    "NO_CODE",
    "OTHER",
    "REFUSAL_CATEGORIES",
    "cache_miss",
    "client_code_blocks",
    "code_block_outcome",
    "code_blocks",
    "error_code",
    "error_code_of_body",
    "error_message",
    "message_facts",
    "platform_of",
    "refusal",
    "retry_reason",
]

OTHER = "__other__"  # a value the installed SDK does not name: one bounded bucket
NO_CODE = "none"  # an error without an error_code (connection errors, most 5xx)


def _literal_args(tp: Any, field: str) -> list[str]:
    """The string literals of ``field`` across the members of a (possibly Annotated) union of models."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _literal_args(typing.get_args(tp)[0], field)
    if origin is typing.Union:
        return [v for arg in typing.get_args(tp) for v in _literal_args(arg, field)]
    info = getattr(tp, "model_fields", {}).get(field)
    if info is None:
        return []
    annotation = info.annotation
    if typing.get_origin(annotation) is typing.Union:  # Optional[Literal[...]]
        return [v for arg in typing.get_args(annotation) for v in typing.get_args(arg) if isinstance(v, str)]
    return [v for v in typing.get_args(annotation) if isinstance(v, str)]


def _sdk_values(module: str, name: str, field: str) -> frozenset[str]:
    """What the installed SDK names (read once, at import); empty on an SDK without that type."""
    try:
        tp = getattr(__import__(module, fromlist=[name]), name)
        return frozenset(_literal_args(tp, field))
    except Exception:  # an older SDK: every value is then OTHER, still bounded
        return frozenset()


#: The API's error codes the installed SDK knows (``error.details.error_code``): the error_code label's
#: values, with ``none`` and ``__other__``.
ERROR_CODES = _sdk_values("anthropic.types.shared.error_details", "ErrorDetails", "error_code")
#: ``Message.diagnostics.cache_miss_reason.type`` values (model_changed, system_changed, ...).
CACHE_MISS_REASONS = _sdk_values("anthropic.types.cache_miss_reason", "CacheMissReason", "type")
#: ``stop_details.category`` of a refusal (cyber, bio, ...); ``none`` when the API names none.
REFUSAL_CATEGORIES = _sdk_values("anthropic.types.refusal_stop_details", "RefusalStopDetails", "category")

# Client class (any in its MRO) -> the platform that bills its requests.
_PLATFORMS = {
    "AnthropicBedrock": "bedrock",
    "AsyncAnthropicBedrock": "bedrock",
    "AnthropicVertex": "vertex",
    "AsyncAnthropicVertex": "vertex",
    "AnthropicGoogleCloud": "vertex",
    "AsyncAnthropicGoogleCloud": "vertex",
    "AnthropicFoundry": "foundry",
    "AsyncAnthropicFoundry": "foundry",
    "AnthropicAWS": "aws",
    "AsyncAnthropicAWS": "aws",
}

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


def message_facts(message: Any, usage: Any) -> None:
    """Copy what a message says beside its usage (cache diagnostics, refusal category) into ``usage``."""
    diagnostics = getattr(message, "diagnostics", None)
    if diagnostics is not None:
        cache_miss(getattr(diagnostics, "cache_miss_reason", None), usage)
    if getattr(message, "stop_reason", None) == "refusal":
        refusal(getattr(message, "stop_details", None), usage)


def cache_miss(reason: Any, usage: Any) -> None:
    """``diagnostics.cache_miss_reason`` (``None`` while the diagnosis is pending: nothing to record)."""
    if reason is None:
        return
    kind = getattr(reason, "type", None)
    usage.cache_miss = kind if kind in CACHE_MISS_REASONS else OTHER
    missed = getattr(reason, "cache_missed_input_tokens", None)
    usage.cache_missed = missed if isinstance(missed, int) and missed > 0 else 0


def refusal(details: Any, usage: Any) -> None:
    """The refusal category of ``stop_details`` (``none`` when the API names no category)."""
    category = getattr(details, "category", None) if details is not None else None
    if category is None:
        usage.refusal = NO_CODE
    else:
        usage.refusal = category if category in REFUSAL_CATEGORIES else OTHER


def platform_of(client: Any) -> str:
    """The platform that bills ``client``'s requests: anthropic, aws, foundry, bedrock or vertex."""
    for cls in type(client).__mro__:
        found = _PLATFORMS.get(cls.__name__)
        if found is not None:
            return found
    return "anthropic"


def error_code(exc: BaseException) -> str:
    """The error_code label: the API's ``error.details.error_code`` when the SDK knows it, ``__other__``
    for one it does not, ``none`` when there is none."""
    code = getattr(exc, "error_code", None)
    if not isinstance(code, str) or not code:
        return NO_CODE
    return code if code in ERROR_CODES else OTHER


def error_code_of_body(body: Any) -> str:
    """:func:`error_code` from a JSON error body (a per-attempt response the SDK does not parse)."""
    try:
        code = body["error"]["details"]["error_code"]
    except (KeyError, TypeError, IndexError):
        return NO_CODE
    if not isinstance(code, str) or not code:
        return NO_CODE
    return code if code in ERROR_CODES else OTHER


def error_message(exc: BaseException | None) -> str | None:
    """The message for the event log: the SDK's errors only (the API's answer); an application's own
    exception may quote a prompt, so its message is never taken."""
    if exc is None or not isinstance(exc, AnthropicError):
        return None
    return str(exc)


def retry_reason(exc: BaseException) -> str:
    """The reason label of a retry caused by an exception rather than a status."""
    return "timeout" if isinstance(exc, (APITimeoutError, httpx2.TimeoutException)) else "connection"
