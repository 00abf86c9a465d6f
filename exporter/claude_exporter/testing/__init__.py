"""Test helpers for code that uses the Anthropic Python SDK: a fake Messages API over real HTTP.

    >>> from claude_exporter.testing import FakeAnthropic, Reply, code_execution_blocks
    >>> with FakeAnthropic() as fake:
    ...     fake.script(Reply(content=code_execution_blocks("nonzero_exit"), stop_reason="end_turn"))
    ...     with fake.client(max_retries=0).messages.stream(
    ...         model="claude-x", max_tokens=16, messages=[{"role": "user", "content": "run it"}]
    ...     ) as stream:
    ...         final = stream.get_final_message()
    ...     [block.type for block in final.content], final.content[1].content.return_code
    (['server_tool_use', 'code_execution_tool_result'], 1)

In pytest, the ``fake_anthropic`` fixture (plugin ``claude_exporter.testing.plugin``, registered as an
entry point) yields a started `FakeAnthropic`. See `claude_exporter.testing.fake_api` for the rules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._replies import FAKE_MODEL, CodeTool, Outcome, Reply, code_execution_blocks, error_type_for
    from .fake_api import KEY_HEADER, FakeAnthropic, FakeRequest, Responder

__all__ = [
    "FAKE_MODEL",
    "KEY_HEADER",
    "CodeTool",
    "FakeAnthropic",
    "FakeRequest",
    "Outcome",
    "Reply",
    "Responder",
    "code_execution_blocks",
    "error_type_for",
]

# Loaded on first use: pytest imports this package for the plugin in every session of every project that
# installs claude-exporter, and the fake pulls in http.server and friends.
_HOME = {name: "._replies" for name in ("FAKE_MODEL", "CodeTool", "Outcome", "Reply")}
_HOME |= {"code_execution_blocks": "._replies", "error_type_for": "._replies"}
_HOME |= {name: ".fake_api" for name in ("KEY_HEADER", "FakeAnthropic", "FakeRequest", "Responder")}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
