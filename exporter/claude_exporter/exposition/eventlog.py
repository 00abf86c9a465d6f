"""The structured event log: one JSON object per finished execution, through ``claude_exporter.events``.

The field names are the seed's (``claude_execution_complete`` / ``claude_execution_error`` with
``execution_id``, ``duration_ms``, ``input_tokens``, ``output_tokens``, ``stop_reason``, ``timestamp``),
followed by agent, task, model, cache tokens, requests, code blocks and cost. Successes are sampled at the
agent's ``sampling_rate``; errors are always written. Never a prompt: an error message is written only
for the SDK's own errors (the API's answer), through a redactor that removes anything shaped like an API
key; the message of an exception raised by the application's code may quote a prompt, so it is left out.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import random
import re
import sys
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from claude_exporter.config import Config, EventLogConfig
from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.records import ExecutionRecord

__all__ = ["LOGGER_NAME", "event_fields", "event_log_listener", "redact"]

LOGGER_NAME = "claude_exporter.events"
_KEY = re.compile(r"sk-ant-[A-Za-z0-9_\-]+|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}")
_MAX_MESSAGE = 500


def redact(text: str) -> str:
    """Remove API keys and bearer tokens, and bound the length."""
    text = _KEY.sub("[redacted]", text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def event_fields(record: ExecutionRecord, now: datetime | None = None) -> dict[str, Any]:
    """The event-log object for one execution, in the seed's field order."""
    stamp = (now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    fields: dict[str, Any] = {
        "event": "claude_execution_complete" if record.ok else "claude_execution_error",
        "execution_id": record.execution_id or uuid.uuid4().hex,
    }
    if not record.ok:
        fields["error_type"] = record.error_type
        fields["error_message"] = redact(record.error_message) if record.error_message is not None else None
    fields.update(
        duration_ms=round(record.seconds * 1000),
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        stop_reason=record.stop_reason,
        timestamp=stamp,
        agent=record.agent,
        task=record.task,
        model=record.model,
        cache_creation_input_tokens=record.cache_creation_tokens,
        cache_read_input_tokens=record.cache_read_tokens,
        requests=record.requests,
        code_blocks=record.code_blocks,
        cost_usd=round(record.cost_usd, 8),
    )
    return fields


class _JSONLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def _handler(settings: EventLogConfig) -> logging.Handler:
    if settings.destination == "file" and settings.path:
        handler: logging.Handler = logging.FileHandler(settings.path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stdout if settings.destination == "stdout" else sys.stderr)
    handler.setFormatter(_JSONLines())
    return handler


def event_log_listener(
    config: Config, rng: Callable[[], float] = random.random
) -> Callable[[Recorder], None]:
    """A settings listener that writes every finished execution to the event log."""

    def attach(rec: Recorder) -> None:
        logger = logging.getLogger(LOGGER_NAME)
        # A configuration file gets the destination it names; without one the lines go to the logger
        # for the application's own logging setup, and cost nothing while nobody listens.
        if config.source != "<default>":
            handler = _handler(config.event_log)
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False  # the lines are JSON for machines, not for the root logger's format

            def detach() -> None:  # uninstrument(): the next configuration may name another destination
                logger.removeHandler(handler)
                handler.close()
                logger.propagate = True
                logger.setLevel(logging.NOTSET)

            rec.on_close(detach)
        rates = {name: agent.sampling_rate for name, agent in config.agents.items()}
        default_rate = config.defaults.sampling_rate

        def write(record: ExecutionRecord) -> None:
            if not logger.isEnabledFor(logging.INFO):
                return
            if record.ok:
                rate = rates.get(record.agent, default_rate)
                if rate < 1.0 and rng() >= rate:
                    return
            logger.info(json.dumps(event_fields(record), separators=(",", ":")))

        if config.source != "<default>":
            rec.listen(
                write, functools.partial(logger.isEnabledFor, logging.INFO)
            )  # no Python frame per call
        else:
            # Without a configuration file the log is written only when the application put a handler
            # on this logger itself: a root logger at INFO (logging.basicConfig) does not ask for it, and
            # would otherwise pay for a JSON line on every execution.
            # The gate runs once per execution: the handler list itself (truthy when the application
            # added one), read without a Python frame; write() checks the level.
            rec.listen(write, functools.partial(operator.attrgetter("handlers"), logger))

    return attach
