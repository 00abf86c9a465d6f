"""Code-execution tool results counted by tool and outcome: server tools in responses (streaming and not,
first-party and beta) and client-side tools named in the configuration."""

from __future__ import annotations

import itertools

import anthropic
import claude_exporter as ce
import pytest
from anthropic.types import Message
from claude_exporter.config import parse_config
from claude_exporter.recording.state import ACTIVE
from claude_exporter.testing import Reply, code_execution_blocks
from conftest import MODEL, kw, requests, val
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.integration

TOOLS = ("code_execution", "bash_code_execution", "text_editor_code_execution")
OUTCOMES = ("success", "nonzero_exit", "tool_error")
BETAS = ["code-execution-2025-08-25"]
# The fake's text editor has no exit code: its "nonzero_exit" script is a file_not_found error object,
# which is a tool error for the metric.
EXPECTED = {
    (tool, outcome): (
        "tool_error" if tool == "text_editor_code_execution" and outcome != "success" else outcome
    )
    for tool, outcome in itertools.product(TOOLS, OUTCOMES)
}


def blocks(reg, tool: str, outcome: str, agent: str = "default") -> float:
    labels = {"agent": agent, "model": MODEL, "tool": tool, "outcome": outcome}
    return val(reg, "claude_code_blocks_executed_total", **labels)


def all_blocks(reg) -> dict[tuple[str, str], float]:
    out = {}
    for tool, outcome in itertools.product(TOOLS, OUTCOMES):
        got = blocks(reg, tool, outcome)
        if got:
            out[(tool, outcome)] = got
    return out


def _consume(client, mode: str):
    if mode == "create":
        return client.messages.create(**kw())
    if mode == "create_stream":
        for _ in client.messages.create(**kw(), stream=True):
            pass
        return None
    if mode == "stream":
        with client.messages.stream(**kw()) as stream:
            return stream.get_final_message()
    if mode == "beta_create":
        return client.beta.messages.create(**kw(), betas=BETAS)
    if mode == "beta_stream":
        with client.beta.messages.stream(**kw(), betas=BETAS) as stream:
            return stream.get_final_message()
    raise AssertionError(mode)


MODES = ("create", "create_stream", "stream", "beta_create", "beta_stream")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("tool", "outcome"), list(itertools.product(TOOLS, OUTCOMES)))
def test_one_block_by_tool_and_outcome(reg, fake_anthropic, mode, tool, outcome):
    fake_anthropic.script(Reply(content=code_execution_blocks(outcome, tool), stop_reason="end_turn"))
    _consume(fake_anthropic.client(max_retries=0), mode)

    assert all_blocks(reg) == {(tool, EXPECTED[(tool, outcome)]): 1}
    assert requests(reg) == (1, 0)


@pytest.mark.parametrize("mode", MODES)
def test_many_blocks_in_one_response(reg, fake_anthropic, mode):
    content = [
        {"type": "text", "text": "Let me run that."},
        *code_execution_blocks("success", "code_execution"),
        *code_execution_blocks("nonzero_exit", "code_execution"),
        *code_execution_blocks("success", "code_execution"),
        *code_execution_blocks("tool_error", "bash_code_execution"),
        *code_execution_blocks("success", "text_editor_code_execution"),
        {"type": "text", "text": "Done."},
    ]
    fake_anthropic.script(Reply(content=content), Reply(content=code_execution_blocks("success")))
    client = fake_anthropic.client(max_retries=0)
    _consume(client, mode)
    _consume(client, mode)

    assert all_blocks(reg) == {
        ("code_execution", "success"): 3,
        ("code_execution", "nonzero_exit"): 1,
        ("bash_code_execution", "tool_error"): 1,
        ("text_editor_code_execution", "success"): 1,
    }
    assert requests(reg) == (2, 0)


def test_response_types_are_the_sdks(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(content=code_execution_blocks("nonzero_exit")),
        Reply(content=code_execution_blocks("nonzero_exit")),
    )
    client = fake_anthropic.client(max_retries=0)
    msg = client.messages.create(**kw())
    beta = client.beta.messages.create(**kw(), betas=BETAS)
    assert type(msg) is Message
    assert type(beta) is anthropic.types.beta.BetaMessage
    assert msg.content[1].content.return_code == 1
    assert beta.content[1].content.return_code == 1


def test_no_code_blocks_no_series(reg, fake_anthropic):
    fake_anthropic.script(Reply(content=[{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}]))
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert all_blocks(reg) == {}


def test_code_blocks_with_a_mid_stream_error_after_them(reg, fake_anthropic):
    # message_start, ping, then server_tool_use (start, delta, stop), then the result block's start:
    # the error comes right after the result block arrived.
    fake_anthropic.script(Reply(content=code_execution_blocks("success"), stream_error_after=6))
    with pytest.raises(anthropic.APIStatusError):
        for _ in fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True):
            pass
    assert requests(reg) == (0, 1)
    # The result arrived (the code ran) before the stream broke: it counts, as the tokens seen so far do.
    assert all_blocks(reg) == {("code_execution", "success"): 1}


# -- client-side code tools named in the configuration -----------------------------------------------------


def _tool_turns(tool_name: str, is_error: bool):
    return [
        {"role": "user", "content": "run it"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_a", "name": tool_name, "input": {"code": "print(1)"}},
                {"type": "tool_use", "id": "toolu_b", "name": "web_lookup", "input": {"q": "x"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "1", "is_error": is_error},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "found"},
            ],
        },
    ]


def test_client_code_tools_from_config(fake_anthropic):
    config = parse_config({"monitoring": {"coder": {"code_tools": ["run_python"]}}})
    registry = CollectorRegistry()
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    try:
        ce.instrument(config, registry=registry)
        client = fake_anthropic.client(max_retries=0)
        with ce.execution("loop", agent="coder"):
            client.messages.create(model=MODEL, max_tokens=16, messages=_tool_turns("run_python", False))
            client.messages.create(model=MODEL, max_tokens=16, messages=_tool_turns("run_python", True))
            client.messages.create(model=MODEL, max_tokens=16, messages=_tool_turns("other_tool", True))
        # An agent the config does not give code tools: its tool results are not code blocks.
        with ce.execution("loop", agent="someone-else"):
            client.messages.create(model=MODEL, max_tokens=16, messages=_tool_turns("run_python", True))

        def count(agent, tool, outcome):
            labels = {"agent": agent, "model": MODEL, "tool": tool, "outcome": outcome}
            return val(registry, "claude_code_blocks_executed_total", **labels)

        assert count("coder", "run_python", "success") == 1
        assert count("coder", "run_python", "tool_error") == 1
        assert count("coder", "other_tool", "tool_error") == 0
        assert count("coder", "web_lookup", "success") == 0
        assert count("someone-else", "run_python", "tool_error") == 0
        assert requests(registry, agent="coder") == (3, 0)
    finally:
        ce.uninstrument()
