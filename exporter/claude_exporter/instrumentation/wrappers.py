"""Wrapper factories for the SDK's entry points (wrapt signature: wrapped, instance, args, kwargs).

Every wrapper returns exactly what the SDK returned and raises exactly what it raised. The shim's own
work sits in ``try`` blocks that count faults in ``claude_exporter_internal_errors_total`` and carry on.
"""

from __future__ import annotations

from typing import Any, cast

from anthropic import AsyncStream, Stream
from anthropic._constants import RAW_RESPONSE_HEADER
from anthropic._response import AsyncAPIResponse, BaseAPIResponse

from claude_exporter.instrumentation.extract import Usage, client_code_blocks
from claude_exporter.instrumentation.middleware import MIDDLEWARE, attach, track
from claude_exporter.instrumentation.streams import WATCH_ATTR, watch_stream
from claude_exporter.recording.call import Call
from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.state import CURRENT_CALL, CURRENT_EXECUTION, STATE

__all__ = [
    "async_request",
    "client_copy",
    "manager_aenter",
    "manager_enter",
    "stream_close",
    "stream_method",
    "sync_request",
]

PENDING_ATTR = "_claude_exporter_pending"


def _begin(rec: Recorder, resource: Any, model: Any, messages: Any = None) -> Call | None:
    try:
        client = resource._client
        if MIDDLEWARE not in client._middleware:
            attach(client)
    except Exception:
        rec.fault("middleware_attach")
    try:
        ex = CURRENT_EXECUTION.get()
        if ex is None:
            agent = rec.options.default_agent
        else:
            agent = ex.agent
            if ex.labels is None:  # opened before instrument(): the request stands alone
                ex = None
        labels = rec.request_labels(agent, model if isinstance(model, str) else "unknown")
        call = Call(rec, labels, ex)
        if labels.code_tools and messages is not None:
            call.client_blocks = list(client_code_blocks(messages, labels.code_tools))
        return call
    except Exception:
        rec.fault("request_start")
        return None


def _failed(call: Call, exc: BaseException) -> None:
    try:
        call.fail(exc)
    except Exception:
        call.rec.fault("request_error")


def _result(call: Call, result: Any, raw_mode: str | None) -> Any:
    """Account for a successful return; an ``APIResponse`` in raw mode is parsed (the SDK caches it)."""
    try:
        if isinstance(result, Stream):
            watch_stream(call, result, is_async=False)
        elif isinstance(result, AsyncStream):
            watch_stream(call, result, is_async=True)
        elif isinstance(result, BaseAPIResponse):
            if raw_mode == "stream":
                _hook_streaming_response(call, result)
            elif isinstance(result, AsyncAPIResponse):
                return result.parse()  # awaited by the async wrapper, then passed back here
            else:
                _result(call, cast(Any, result).parse(), None)
        elif getattr(result, "usage", None) is not None:
            call.succeed_message(result)
        else:
            call.succeed(_empty_usage(), None, ())
    except Exception:
        call.rec.fault("request_result")
        call.done = True
    return None


def _empty_usage() -> Usage:
    return Usage()


def _raw_mode(kwargs: dict[str, Any]) -> str | None:
    headers = kwargs.get("extra_headers")
    return headers.get(RAW_RESPONSE_HEADER) if headers else None


class _Pending:
    """A streaming-response body not parsed yet: finished by parse() or close()."""

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.call = call

    def finish(self, error: BaseException | None = None) -> None:
        if not self.call.done:
            self.call.succeed(_empty_usage(), None, ())


# -- create / parse ---------------------------------------------------------------------------------------


def sync_request(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    rec = STATE.recorder
    call = _begin(rec, instance, kwargs.get("model"), kwargs.get("messages")) if rec is not None else None
    if call is None:
        return wrapped(*args, **kwargs)
    token = CURRENT_CALL.set(call)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        CURRENT_CALL.reset(token)
        _failed(call, exc)
        raise
    CURRENT_CALL.reset(token)
    _result(call, result, _raw_mode(kwargs) if isinstance(result, BaseAPIResponse) else None)
    return result


def async_request(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    rec = STATE.recorder
    if rec is None:
        return wrapped(*args, **kwargs)
    return _async_request(rec, wrapped, instance, args, kwargs)


async def _async_request(rec: Recorder, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    call = _begin(rec, instance, kwargs.get("model"), kwargs.get("messages"))
    if call is None:
        return await wrapped(*args, **kwargs)
    token = CURRENT_CALL.set(call)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        CURRENT_CALL.reset(token)
        _failed(call, exc)
        raise
    CURRENT_CALL.reset(token)
    pending = _result(call, result, _raw_mode(kwargs) if isinstance(result, BaseAPIResponse) else None)
    if pending is not None:
        try:
            _result(call, await pending, None)
        except Exception:
            rec.fault("request_result")
            call.done = True
    return result


# -- messages.stream(): the request starts when the manager is entered ---------------------------------


def stream_method(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    manager = wrapped(*args, **kwargs)
    if STATE.recorder is not None:
        try:
            manager.__dict__[PENDING_ATTR] = (instance, kwargs.get("model"), kwargs.get("messages"))
        except Exception:
            STATE.recorder.fault("stream_start")
    return manager


def _pending_call(instance: Any) -> Call | None:
    pending = instance.__dict__.pop(PENDING_ATTR, None)
    rec = STATE.recorder
    if pending is None or rec is None:
        return None
    return _begin(rec, *pending)


def manager_enter(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    call = _pending_call(instance)
    if call is None:
        return wrapped(*args, **kwargs)
    token = CURRENT_CALL.set(call)
    try:
        message_stream = wrapped(*args, **kwargs)
    except BaseException as exc:
        CURRENT_CALL.reset(token)
        _failed(call, exc)
        raise
    CURRENT_CALL.reset(token)
    _watch_message_stream(call, message_stream, is_async=False)
    return message_stream


def manager_aenter(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    call = _pending_call(instance)
    if call is None:
        return wrapped(*args, **kwargs)
    return _manager_aenter(call, wrapped, args, kwargs)


async def _manager_aenter(call: Call, wrapped: Any, args: Any, kwargs: Any) -> Any:
    token = CURRENT_CALL.set(call)
    try:
        message_stream = await wrapped(*args, **kwargs)
    except BaseException as exc:
        CURRENT_CALL.reset(token)
        _failed(call, exc)
        raise
    CURRENT_CALL.reset(token)
    _watch_message_stream(call, message_stream, is_async=True)
    return message_stream


def _watch_message_stream(call: Call, message_stream: Any, is_async: bool) -> None:
    try:
        watch_stream(call, message_stream._raw_stream, is_async)
    except Exception:
        call.rec.fault("stream_start")
        call.done = True


# -- client copies: with_options() / copy() carry the middleware into a new client ---------------------------


def client_copy(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    client = wrapped(*args, **kwargs)
    try:
        track(client)
    except Exception:
        if STATE.recorder is not None:
            STATE.recorder.fault("client_copy")
    return client


# -- close hooks and streaming responses --------------------------------------------------------------


def stream_close(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    watch = instance.__dict__.get(WATCH_ATTR)
    if watch is not None:
        watch.finish()
    return wrapped(*args, **kwargs)


def _hook_streaming_response(call: Call, response: Any) -> None:
    """with_streaming_response: the body is the caller's to read, so the request finishes when the
    caller parses it (a message, or a stream that is then watched) or closes the response.

    The hooks sit on this one response object, not on the class: the SDK parses every response it
    handles, and only these few should pay for a look.
    """
    finisher: list[Any] = [_Pending(call)]
    cls: Any = type(response)
    target: Any = response

    def seen(parsed: Any, to: Any) -> None:
        if to is None and not call.done:
            _result(call, parsed, None)
            watch = getattr(parsed, "__dict__", {}).get(WATCH_ATTR)
            if watch is not None:
                finisher[0] = watch  # closing the response now finishes with what the stream showed

    if isinstance(response, AsyncAPIResponse):

        async def aparse(*, to: Any = None) -> Any:
            parsed = await cls.parse(response, to=to)
            seen(parsed, to)
            return parsed

        async def aclose() -> None:
            finisher[0].finish()
            await cls.close(response)

        target.parse, target.close = aparse, aclose
    else:

        def parse(*, to: Any = None) -> Any:
            parsed = cls.parse(response, to=to)
            seen(parsed, to)
            return parsed

        def close() -> None:
            finisher[0].finish()
            cls.close(response)

        target.parse, target.close = parse, close
