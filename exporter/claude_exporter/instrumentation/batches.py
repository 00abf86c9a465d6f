"""Batch results priced at batch rates: ``messages.batches.results(batch_id)`` read through the SDK.

A Message Batch is billed when its results are produced, and the only place its usage reaches the
application is the results file the SDK streams as ``MessageBatchIndividualResponse`` lines. The seam
replaces ``results`` on the four batch resources (sync, async, and their beta twins); the replacement
returns the very decoder the SDK made, with one generator put in place of its ``_iterator`` (as a
stream's watch is), so every line reaches the caller unchanged and each ``succeeded`` one is priced on
its way: at the batch rates (``service_tier`` ``batch``, whatever its usage says, since the endpoint
bills it so), into the token, cost, savings and tier families of its agent and model. Reading results
is not a Messages request: no request, duration or execution is counted for it.

Each result is counted once: the (batch id, custom_id) pairs already counted are kept (as their 64-bit
hash, so a pair costs under 100 bytes whatever its ids: two pairs would have to collide for a result to go
uncounted), the oldest forgotten past :data:`SEEN_LIMIT` (a batch re-read after that many later results
would count again).
A pair is marked before it is recorded, so a fault while recording loses that result's figures rather
than count them twice; the fault is counted and the caller's iteration goes on.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from anthropic._decoders.jsonl import AsyncJSONLDecoder, JSONLDecoder

from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.state import CURRENT_EXECUTION
from claude_exporter.recording.usage import Usage

__all__ = ["SEEN_LIMIT", "Seen", "async_results", "sync_results"]

#: How many (batch id, custom_id) pairs are remembered (about 8 MB at the limit).
SEEN_LIMIT = 100_000

_SEEN: weakref.WeakKeyDictionary[Recorder, Seen] = weakref.WeakKeyDictionary()
_SEEN_LOCK = threading.Lock()


class Seen:
    """The (batch id, custom_id) pairs already counted, the oldest forgotten past ``limit``."""

    __slots__ = ("_lock", "_order", "_pairs", "limit")

    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self.limit = limit
        self._pairs: set[int] = set()  # hashes of the pairs
        # The same hashes, oldest first. (A dict in insertion order, its first key deleted, would do in
        # one structure, but finding its first key scans past every deleted slot: 166 us a pair, measured.)
        self._order: deque[int] = deque()
        self._lock = threading.Lock()

    def first(self, pair: tuple[str, str]) -> bool:
        """Whether ``pair`` is new (and now remembered)."""
        key = hash(pair)  # the ids themselves may be long (a custom_id up to 64 characters)
        with self._lock:
            pairs = self._pairs
            if key in pairs:
                return False
            order = self._order
            if len(order) >= self.limit:
                pairs.discard(order.popleft())
            pairs.add(key)
            order.append(key)
            return True

    def __len__(self) -> int:
        return len(self._order)


def seen_of(rec: Recorder) -> Seen:
    """The one memory of counted results per recorder, shared by its four seams."""
    with _SEEN_LOCK:
        found = _SEEN.get(rec)
        if found is None:
            found = _SEEN[rec] = Seen()
        return found


def _batch_id(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs.get("message_batch_id")


def record_result(rec: Recorder, seen: Seen, batch_id: str, item: Any) -> None:
    """Price one line of a batch's results, if it succeeded and was not counted before."""
    result = item.result
    if result.type != "succeeded":
        return  # errored, canceled, expired: not billed
    custom_id = item.custom_id
    if not isinstance(custom_id, str) or not seen.first((batch_id, custom_id)):
        return
    message = result.message
    usage = Usage()
    usage.update(message.usage)
    usage.service_tier = "batch"  # the results endpoint bills at the batch rates
    model = message.model if isinstance(message.model, str) else "unknown"
    usage.model = model
    ex = CURRENT_EXECUTION.get()
    agent = rec.options.default_agent if ex is None else ex.agent
    rec.request_labels(agent, model).add_priced_usage(usage)


def _watch(rec: Recorder, seen: Seen, batch_id: Any, decoder: Any, is_async: bool) -> None:
    """Put the pricing generator into ``decoder``'s ``_iterator`` (made lazily by the SDK, not started)."""
    if not isinstance(batch_id, str):
        return
    inner = decoder._iterator
    observe = _aobserve if is_async else _observe
    decoder.__dict__["_iterator"] = observe(rec, seen, batch_id, inner)


def _observe(rec: Recorder, seen: Seen, batch_id: str, items: Iterator[Any]) -> Iterator[Any]:
    for item in items:
        try:
            record_result(rec, seen, batch_id, item)
        except Exception:
            rec.fault("batch_result")
        yield item


async def _aobserve(
    rec: Recorder, seen: Seen, batch_id: str, items: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    async for item in items:
        try:
            record_result(rec, seen, batch_id, item)
        except Exception:
            rec.fault("batch_result")
        yield item


def sync_results(original: Callable[..., Any], rec: Recorder) -> Callable[..., Any]:
    seen = seen_of(rec)

    @functools.wraps(original)
    def results(self: Any, *args: Any, **kwargs: Any) -> Any:
        decoder = original(self, *args, **kwargs)
        # with_raw_response and friends return the raw response, not a decoder: left as it is.
        if isinstance(decoder, JSONLDecoder):
            try:
                _watch(rec, seen, _batch_id(args, kwargs), decoder, False)
            except Exception:
                rec.fault("batch_results")
        return decoder

    return results


def async_results(original: Callable[..., Any], rec: Recorder) -> Callable[..., Any]:
    seen = seen_of(rec)

    @functools.wraps(original)
    async def results(self: Any, *args: Any, **kwargs: Any) -> Any:
        decoder = await original(self, *args, **kwargs)
        if isinstance(decoder, AsyncJSONLDecoder):
            try:
                _watch(rec, seen, _batch_id(args, kwargs), decoder, True)
            except Exception:
                rec.fault("batch_results")
        return decoder

    return results
