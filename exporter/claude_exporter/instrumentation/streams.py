"""Observing a stream without proxying it.

The SDK's ``Stream`` / ``AsyncStream`` read every event from the instance's ``_iterator``; the watch puts
one generator in its place, so the caller keeps the very stream object the SDK returned, and every
consumer (iteration, ``text_stream``, ``get_final_message``, ``until_done``) goes through it. Per event
it reads ``event.type`` and nothing else unless the event carries what the metrics need.

The request finishes exactly once: on exhaustion, on an error, on ``close()`` (the instrumentor hooks
it, so context exit counts), or when the stream is garbage collected after an early ``break``. A
finaliser never records by itself: it may run while this very thread holds a series lock, so it hands the
request to the recorder's ``orphans``, which the next finished request or scrape settles.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any

from claude_exporter.instrumentation.extract import (
    cache_miss,
    code_block_outcome,
    error_code,
    error_message,
    refusal,
)
from claude_exporter.recording.call import Call
from claude_exporter.recording.usage import Usage

__all__ = ["WATCH_ATTR", "StreamWatch", "watch_stream"]

WATCH_ATTR = "_claude_exporter_watch"
_NOTHING: dict[str, Any] = {}


class StreamWatch:
    """What one stream has shown so far, and the request it finishes."""

    __slots__ = ("blocks", "call", "first", "stop_reason", "usage")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.blocks: list[tuple[str, str]] = []
        self.first = True

    def see(self, event: Any) -> None:
        kind = event.type
        if kind == "content_block_delta":
            if self.first:
                self.first = False
                self.call.first_token()
        elif kind == "message_delta":
            self.usage.update(event.usage)
            delta = event.delta
            reason = delta.stop_reason
            if reason is not None:
                self.stop_reason = reason
                if reason == "refusal":
                    refusal(getattr(delta, "stop_details", None), self.usage)
        elif kind == "message_start":
            message = event.message
            usage = self.usage
            usage.update(message.usage)
            served = message.model
            if served.__class__ is str:
                usage.model = served  # the model that answered prices the stream
            # From the model's fields: an SDK without the field would answer getattr by raising.
            diagnostics = getattr(message, "__dict__", _NOTHING).get("diagnostics")
            if diagnostics is not None:
                cache_miss(getattr(diagnostics, "cache_miss_reason", None), self.usage)
        elif kind == "content_block_start":
            found = code_block_outcome(event.content_block)
            if found is not None:
                self.blocks.append(found)

    def finish(self, error: BaseException | None = None) -> None:
        call = self.call
        if call.done:
            return
        try:
            if error is None:
                call.finish(self.usage, self.stop_reason, self.blocks)
            else:
                call.finish(
                    self.usage,
                    None,
                    self.blocks,
                    type(error).__name__,
                    error_message(error),
                    error_code(error),
                )
        except Exception:
            call.fault("stream_finish")

    def orphan(self) -> None:
        """Called from a finaliser: leave the finishing to the recorder's next ordinary call."""
        if not self.call.done:
            # Straight to the recorder's queue, not through a function of the shim: called from a
            # finaliser, a fault there could not be counted.
            self.call.rec.orphans.append(self.finish)

    def observe(self, events: Iterator[Any]) -> Iterator[Any]:
        see, waiting = self.see, True  # locals: this loop runs once per event
        try:
            for event in events:
                # Most events are text deltas after the first: they need nothing but the yield.
                if waiting or event.type != "content_block_delta":
                    try:
                        see(event)
                        waiting = self.first
                    except Exception:
                        self.call.fault("stream_event")
                yield event
        except GeneratorExit:  # closed by the garbage collector after an early break
            try:
                self.orphan()
            except Exception:
                self.call.fault("stream_finish")
            raise
        except BaseException as exc:
            try:
                self.finish(exc)
            except Exception:
                self.call.fault("stream_finish")
            raise
        try:
            self.finish()
        except Exception:
            self.call.fault("stream_finish")

    async def aobserve(self, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
        see, waiting = self.see, True  # locals: this loop runs once per event
        try:
            async for event in events:
                # Most events are text deltas after the first: they need nothing but the yield.
                if waiting or event.type != "content_block_delta":
                    try:
                        see(event)
                        waiting = self.first
                    except Exception:
                        self.call.fault("stream_event")
                yield event
        except GeneratorExit:  # closed by the garbage collector after an early break
            try:
                self.orphan()
            except Exception:
                self.call.fault("stream_finish")
            raise
        except BaseException as exc:
            try:
                self.finish(exc)
            except Exception:
                self.call.fault("stream_finish")
            raise
        try:
            self.finish()
        except Exception:
            self.call.fault("stream_finish")

    def __del__(self) -> None:
        # A stream dropped before it was iterated never starts the generator.
        try:
            self.orphan()
        except Exception:
            # Counted by the recorder's next ordinary call: a finaliser takes no locks. (A watch whose
            # __init__ failed has no call to count with.)
            rec = getattr(getattr(self, "call", None), "rec", None)
            if rec is not None:
                rec.orphans.append(functools.partial(rec.fault, "stream_finish"))


def watch_stream(call: Call, stream: Any, is_async: bool) -> StreamWatch:
    """Put a watch into ``stream`` (an ``anthropic.Stream`` or ``AsyncStream``)."""
    watch = StreamWatch(call)
    inner = stream._iterator  # the SDK's generator, created lazily and not yet started
    state = stream.__dict__
    state["_iterator"] = watch.aobserve(inner) if is_async else watch.observe(inner)
    state[WATCH_ATTR] = watch
    return watch
