"""The seams: plain functions put in place of four SDK and httpx2 methods, built per recorder.

- **Request** (``SyncAPIClient.request`` / ``AsyncAPIClient.request``, the SDK's documented custom-request
  method): every Messages call passes through it once, whatever the entry point (``create``,
  ``stream()``, ``parse``, beta, Bedrock, Vertex, ``with_raw_response``, a bound method taken before
  ``instrument()``). Calls to other endpoints pass straight through after one string comparison.
- **Attempt** (``httpx2.Client.send`` / ``AsyncClient.send``): the SDK sends exactly once per HTTP
  attempt, so retries and their causes, every 429 and the ``anthropic-ratelimit-*`` headers are seen
  without a middleware, which would put the client on another code path of the SDK.
- **Stream close** (``Stream.close`` / ``AsyncStream.close``): a stream closed early finishes then.

Each factory takes the original function and the recorder and returns the replacement, so nothing is
looked up per call. Every replacement returns exactly what the SDK returned and raises exactly what it
raised; the shim's own work sits in ``try`` blocks that count faults and carry on.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Callable
from typing import Any, cast

from anthropic import AsyncStream, Stream
from anthropic._constants import RAW_RESPONSE_HEADER
from anthropic._response import AsyncAPIResponse, BaseAPIResponse

from claude_exporter.instrumentation.extract import (
    NO_CODE,
    client_code_blocks,
    code_blocks,
    error_code,
    error_code_of_body,
    error_message,
    message_facts,
    platform_of,
    retry_reason,
)
from claude_exporter.instrumentation.streams import WATCH_ATTR, watch_stream
from claude_exporter.recording.call import Call
from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.state import CURRENT_CALL, CURRENT_EXECUTION
from claude_exporter.recording.usage import Usage

__all__ = ["async_request", "async_send", "async_stream_close", "stream_close", "sync_request", "sync_send"]

Factory = Callable[[Callable[..., Any], Recorder], Callable[..., Any]]

_NOTHING: dict[str, Any] = {}
_MESSAGES = "/v1/messages"
_MESSAGES_QUERY = "/v1/messages?"  # beta: /v1/messages?beta=true


def _opener(rec: Recorder) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], Call | None]:
    default_agent = rec.options.default_agent
    resolve = rec.request_labels
    platforms: dict[type, str] = {}  # client class -> the platform that bills it, decided once per class

    def open_call(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        """A Call for a Messages request (``request(cast_to, options, ...)``'s arguments), else None."""
        options: Any = args[1] if len(args) > 1 else kwargs.get("options")
        url = getattr(options, "url", None)
        if url != _MESSAGES and not (isinstance(url, str) and url.startswith(_MESSAGES_QUERY)):
            return None
        try:
            body = options.json_data
            model = body.get("model") if isinstance(body, dict) else None
            if not isinstance(model, str):
                model = "unknown"
            ex = CURRENT_EXECUTION.get()
            if ex is None:
                agent = default_agent
            else:
                agent = ex.agent
                if ex.rec is not rec:  # opened before instrument(): the request stands alone
                    ex = None
            platform = platforms.get(type(client))
            if platform is None:
                platform = platforms[type(client)] = platform_of(client)
            labels = resolve(agent, model) if platform == "anthropic" else resolve(agent, model, platform)
            blocks = (
                list(client_code_blocks(body.get("messages"), labels.code_tools))
                if labels.code_tools
                else None
            )
            # Everything that can fail is done: a Call registers itself as running.
            return Call(rec, labels, ex, model, client._client, blocks)
        except Exception:
            rec.fault("request_start")
            return None

    return open_call


def _failed(call: Call, exc: BaseException) -> None:
    try:
        call.finish(None, None, (), type(exc).__name__, error_message(exc), error_code(exc))
    except Exception:
        call.fault("request_error")


def _message(call: Call, message: Any) -> None:
    usage = Usage()
    usage.update(message.usage)
    served = getattr(message, "model", None)
    if served.__class__ is str:
        usage.model = served  # the model that answered prices the request
    stop_reason = message.stop_reason
    if stop_reason == "refusal" or getattr(message, "__dict__", _NOTHING).get("diagnostics") is not None:
        message_facts(message, usage)  # most replies carry neither
    content = message.content
    # Most replies hold no code-execution result: skip the scan unless a block could be one.
    call.finish(usage, stop_reason, list(code_blocks(content)) if len(content) > 1 else ())


async def _parse_async(call: Call, response: Any) -> Any:
    """The parsed body of an async raw response, or None (request counted) when the SDK rejects it."""
    try:
        return await response.parse()
    except Exception:  # the SDK rejects the body: its caller sees that when parsing
        call.finish(Usage())
        return None


def _settle(call: Call, result: Any) -> Any:
    """Account for a successful return. Returns an awaitable when an async raw response must be parsed
    (the SDK caches the parse, so the caller's own ``parse()`` gets the same object)."""
    try:
        # Streams first: asking a stream for the usage it lacks would raise and catch AttributeError.
        if isinstance(result, Stream):
            watch_stream(call, result, is_async=False)
        elif isinstance(result, AsyncStream):
            watch_stream(call, result, is_async=True)
        elif getattr(result, "usage", None) is not None:
            _message(call, result)
        elif isinstance(result, BaseAPIResponse):
            if result.http_request.headers.get(RAW_RESPONSE_HEADER) == "stream":
                _hook_streaming_response(call, result)
            elif isinstance(result, AsyncAPIResponse):
                return _parse_async(call, result)
            else:
                try:
                    parsed = cast(Any, result).parse()
                except Exception:  # the SDK rejects the body: its caller sees that when parsing
                    call.finish(Usage())
                    return None
                _settle(call, parsed)
        else:
            call.finish(Usage())
    except Exception:
        call.fault("request_result")
        _finish_bare(call)
    return None


def _finish_bare(call: Call) -> None:
    """Count the request, without what could not be read from its result."""
    try:
        call.finish(Usage())
    except Exception:
        call.fault("request_finish")
    finally:
        call.abandon()


# -- the request seam -----------------------------------------------------------------------------------


def sync_request(original: Callable[..., Any], rec: Recorder) -> Callable[..., Any]:
    open_call = _opener(rec)

    # Every call out of a replacement sits in its own try: a fault in anything it calls is counted and
    # the caller still gets exactly the SDK's result or exception (tests/test_fault_matrix.py).
    @functools.wraps(original)
    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            call = open_call(self, args, kwargs)
        except Exception:
            rec.fault("request_start")
            call = None
        if call is None:
            return original(self, *args, **kwargs)
        token = CURRENT_CALL.set(call)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            CURRENT_CALL.reset(token)
            try:
                _failed(call, exc)
            except Exception:
                rec.fault("request_error")
            raise
        CURRENT_CALL.reset(token)
        try:
            _settle(call, result)
        except Exception:
            rec.fault("request_result")
        return result

    return request


def async_request(original: Callable[..., Any], rec: Recorder) -> Callable[..., Any]:
    open_call = _opener(rec)

    # A coroutine function like the method it replaces, so inspect.iscoroutinefunction and
    # unittest.mock (AsyncMock) still see one.
    @functools.wraps(original)
    async def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            call = open_call(self, args, kwargs)
        except Exception:
            rec.fault("request_start")
            call = None
        if call is None:
            return await original(self, *args, **kwargs)
        token = CURRENT_CALL.set(call)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            CURRENT_CALL.reset(token)
            try:
                _failed(call, exc)
            except Exception:
                rec.fault("request_error")
            raise
        CURRENT_CALL.reset(token)
        try:
            pending = _settle(call, result)
        except Exception:
            rec.fault("request_result")
            pending = None
        if pending is not None:
            try:
                parsed = await pending
                if parsed is not None:
                    _settle(call, parsed)
            except Exception:
                rec.fault("request_result")
                try:
                    _finish_bare(call)
                except Exception:
                    rec.fault("request_finish")
        return result

    return request


# -- the attempt seam -----------------------------------------------------------------------------------


def _attempt_failed(call: Call, exc: BaseException) -> None:
    try:
        call.attempt_failed(retry_reason(exc))
    except Exception:
        call.fault("attempt_error")


def _coded(call: Call, body: bytes | None) -> None:
    """Keep a 429's or 529's error_code for the retry that follows, and count the 429 under it."""
    try:
        code = error_code_of_body(json.loads(body)) if body else NO_CODE
    except ValueError:
        code = NO_CODE  # not JSON: the attempt still counts
    try:
        call.error_code(code)
    except Exception:
        call.fault("attempt_response")


def sync_send(original: Callable[..., Any], rec: Recorder) -> Callable[..., Any]:
    @functools.wraps(original)
    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        call = CURRENT_CALL.get()
        if call is None or self is not call.http:  # not an attempt of the measured request
            return original(self, request, *args, **kwargs)
        try:
            call.attempt()
        except Exception:
            rec.fault("attempt")
        try:
            response = original(self, request, *args, **kwargs)
        except BaseException as exc:
            try:
                _attempt_failed(call, exc)
            except Exception:
                rec.fault("attempt_error")
            raise
        try:
            coded = call.responded(response.status_code, response.headers)
        except Exception:
            rec.fault("attempt_response")
            coded = False
        if coded:
            try:
                body = response.read()
            except Exception:
                body = None
            try:
                _coded(call, body)
            except Exception:
                rec.fault("attempt_response")
        return response

    return send


def async_send(original: Callable[..., Any], rec: Recorder) -> Callable[..., Any]:
    @functools.wraps(original)
    async def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        call = CURRENT_CALL.get()
        if call is None or self is not call.http:
            return await original(self, request, *args, **kwargs)
        try:
            call.attempt()
        except Exception:
            rec.fault("attempt")
        try:
            response = await original(self, request, *args, **kwargs)
        except BaseException as exc:
            try:
                _attempt_failed(call, exc)
            except Exception:
                rec.fault("attempt_error")
            raise
        try:
            coded = call.responded(response.status_code, response.headers)
        except Exception:
            rec.fault("attempt_response")
            coded = False
        if coded:
            try:
                body = await response.aread()
            except Exception:
                body = None
            try:
                _coded(call, body)
            except Exception:
                rec.fault("attempt_response")
        return response

    return send


# -- stream close and streaming responses --------------------------------------------------------------


def stream_close(original: Callable[..., Any], rec: Recorder) -> Callable[..., Any]:
    @functools.wraps(original)
    def close(self: Any, *args: Any, **kwargs: Any) -> Any:
        watch = self.__dict__.get(WATCH_ATTR)
        if watch is not None:
            try:
                watch.finish()
            except Exception:
                rec.fault("stream_finish")
        return original(self, *args, **kwargs)

    return close


def async_stream_close(original: Callable[..., Any], rec: Recorder) -> Callable[..., Any]:
    @functools.wraps(original)
    async def close(self: Any, *args: Any, **kwargs: Any) -> Any:
        watch = self.__dict__.get(WATCH_ATTR)
        if watch is not None:
            try:
                watch.finish()
            except Exception:
                rec.fault("stream_finish")
        return await original(self, *args, **kwargs)

    return close


class _Pending:
    """A streaming-response body not parsed yet: finished by parse() or close(), or, for a response
    dropped unclosed, by the recorder after its finaliser handed it over."""

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.call = call

    def finish(self, error: BaseException | None = None) -> None:
        if not self.call.done:
            self.call.finish(Usage())

    def __del__(self) -> None:
        if not self.call.done:
            # A finaliser hands the finish to the recorder's queue itself: a function of the shim that
            # failed here could not be counted (the interpreter ignores a finaliser's exceptions).
            self.call.rec.orphans.append(self.finish)


def _hook_streaming_response(call: Call, response: Any) -> None:
    """with_streaming_response: the body is the caller's to read, so the request finishes when the
    caller parses it (a message, or a stream that is then watched) or closes the response.

    The hooks sit on this one response object, not on the class: the SDK parses every response it
    handles, and only these few should pay for a look. They reach the response through a weak
    reference, so the response is freed (and a dropped one finished) when the caller lets it go.
    """
    finisher: list[Any] = [_Pending(call)]
    cls: Any = type(response)
    target: Any = response  # methods are set on this one object
    ref = weakref.ref(response)

    def seen(parsed: Any, to: Any) -> None:
        try:
            if to is None and not call.done:
                _settle(call, parsed)
                watch = getattr(parsed, "__dict__", {}).get(WATCH_ATTR)
                if watch is not None:
                    finisher[0] = watch  # closing the response now finishes with what the stream showed
        except Exception:
            call.fault("request_result")

    def finish() -> None:
        # Inline, not a module helper: the fault matrix replaces module functions, closures stay.
        try:
            finisher[0].finish()
        except Exception:
            call.fault("response_close")

    if isinstance(response, AsyncAPIResponse):

        async def aparse(*, to: Any = None) -> Any:
            parsed = await cls.parse(ref(), to=to)
            seen(parsed, to)
            return parsed

        async def aclose() -> None:
            try:
                finish()
            finally:
                await cls.close(ref())

        target.parse, target.close = aparse, aclose
    else:

        def parse(*, to: Any = None) -> Any:
            parsed = cls.parse(ref(), to=to)
            seen(parsed, to)
            return parsed

        def close() -> None:
            try:
                finish()
            finally:
                cls.close(ref())

        target.parse, target.close = parse, close
