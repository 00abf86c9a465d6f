"""Claude Code's OTLP events recorded as the real CLI means them (issue 19: findings 1-5 and 7; issue 18:
rows 4, 5 and 10), with export requests written by the test in the CLI's shape (``otlp_payloads.py``)
over real HTTP to the exporter's server, read back from the exposition. Every expected figure is worked
by hand from the records sent and the price table's per-million rates, written beside it.

What the CLI does that these pin (checked with 2.1.328 on 2026-12-07, /work/shared/notes/claude-code.md):
``assistant_response`` after every reply with text; ``api_retries_exhausted`` only after more than one
attempt; ``event.sequence`` from 0 in every process; ``session.id`` optional and kept by
``--continue``/``--resume``; ``cache_creation_1h_tokens`` and ``speed`` on ``api_request``.
"""

from __future__ import annotations

import gc
import itertools
import json
import time
import tracemalloc
import urllib.error
import urllib.request
from typing import Any

import pytest
from claude_exporter.config import parse_config
from claude_exporter.config.exporter import OtlpConfig
from claude_exporter.ingest.claude_code import ClaudeCodeIngest
from claude_exporter.ingest.claude_code_events import SessionStop, ToolResult
from claude_exporter.ingest.otlp_records import LogEvent
from conftest import val
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from otlp_payloads import T0, api_request, event, identity, logs_request, resource

PROTOBUF = "application/x-protobuf"
SONNET = "claude-sonnet-4-5"  # per million: input 3, output 15, 5m write 3.75, 1h write 6, read 0.30
OPUS = "claude-opus-4-8"  # per million: input 5, output 25; fast: input 10, output 50
AGENT = "claude-code"
SUBAGENT = "agent:builtin:general-purpose"
# A turn never ends by going quiet here: an hour, so whatever ends one is what the CLI said. A Stop hook's
# turn ends hook_join_seconds later (its last records may still be in the CLI's next batch).
HOOK_JOIN = 0.5
INSTRUMENT_CONFIG = parse_config(
    {"monitoring": {}, "exporter": {"otlp": {"turn_idle_seconds": 3600, "hook_join_seconds": HOOK_JOIN}}}
)
SERVER_OPTIONS = {"otlp": True}


def post(server: Any, path: str, body: bytes, content_type: str = PROTOBUF) -> tuple[int, bytes]:
    request = urllib.request.Request(
        server.url + path, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def logs(server: Any, records: list[dict[str, Any]], res: dict[str, str] | None = None) -> None:
    status, answer = post(server, "/v1/logs", logs_request(records, res))
    assert status == 200, answer


def hook(server: Any, **body: Any) -> None:
    status, answer = post(server, "/v1/hooks", json.dumps(body).encode(), "application/json")
    assert status == 200, answer
    if body.get("hook_event_name") in ("Stop", "SessionEnd"):
        time.sleep(HOOK_JOIN * 1.2)  # its turn ends at the next scrape after hook_join_seconds


def prompt(session: str, prompt_id: str, sequence: int | None = None) -> dict[str, Any]:
    return event(
        "user_prompt", session, sequence, **{"prompt.id": prompt_id}, prompt="<REDACTED>", prompt_length=9
    )


def answer(session: str, prompt_id: str, source: str = "sdk", sequence: int | None = None) -> dict[str, Any]:
    """assistant_response: the CLI sends one after every reply that carries text."""
    return event(
        "assistant_response",
        session,
        sequence,
        **{"prompt.id": prompt_id},
        model=SONNET,
        response_length=42,
        query_source=source,
    )


def tool_use(session: str, prompt_id: str, use_id: str) -> list[dict[str, Any]]:
    """What the CLI logs for an accepted Bash call between two replies."""
    return [
        event("tool_decision", session, **{"prompt.id": prompt_id}, tool_name="Bash", tool_use_id=use_id,
              decision="accept", source="config"),
        event("tool_result", session, **{"prompt.id": prompt_id}, tool_name="Bash", tool_use_id=use_id,
              success="true", duration_ms=20),
    ]  # fmt: skip


def request(rid: str, session: str, prompt_id: str, tokens: tuple[int, int, int, int], **extra: Any) -> Any:
    record = api_request(rid, session=session, prompt=prompt_id, tokens=tokens)
    record.update(extra)
    return record


def executions(reg: Any, outcome: str, task: str = "default", agent: str = AGENT) -> float:
    return val(reg, "claude_executions_total", agent=agent, task=task, outcome=outcome)


def requests_in_executions(reg: Any, task: str = "default") -> float:
    return val(reg, "claude_execution_requests_sum", agent=AGENT, task=task)


def requests(reg: Any, model: str = SONNET, outcome: str = "success") -> float:
    return val(reg, "claude_requests_total", agent=AGENT, model=model, outcome=outcome)


# -- finding 1: a turn ends when the CLI says so, never at an assistant_response -----------------------------


@pytest.mark.integration
def test_text_before_a_tool_call_does_not_end_the_turn(server, reg):
    # Three requests: text + Bash call, text + Bash call, the final text. 401 + 402 + 403 input tokens.
    records = [prompt("s1", "p1"), request("r1", "s1", "p1", (401, 10, 0, 0)), answer("s1", "p1")]
    records += [*tool_use("s1", "p1", "t1"), request("r2", "s1", "p1", (402, 10, 0, 0)), answer("s1", "p1")]
    records += [*tool_use("s1", "p1", "t2"), request("r3", "s1", "p1", (403, 10, 0, 0)), answer("s1", "p1")]
    logs(server, records)
    assert executions(reg, "success") == 0  # nothing has said the turn is over yet
    hook(server, hook_event_name="Stop", session_id="s1", stop_hook_active=False)
    assert executions(reg, "success") == 1
    assert requests_in_executions(reg) == 3
    assert val(reg, "claude_execution_tokens_sum", agent=AGENT, task="default", type="input") == 1206


@pytest.mark.integration
def test_records_after_the_stop_hook_still_belong_to_its_turn(server, reg):
    # The real CLI posts its Stop hook at once and its last records in the next export batch (the scenario
    # matrix saw 1 of 2 requests in the turn when Stop ended it at once): 401 + 402 input tokens.
    logs(server, [prompt("s1", "p1"), request("r1", "s1", "p1", (401, 10, 0, 0)), answer("s1", "p1")])
    body = {"hook_event_name": "Stop", "session_id": "s1", "stop_hook_active": False}
    assert post(server, "/v1/hooks", json.dumps(body).encode(), "application/json")[0] == 200
    assert executions(reg, "success") == 0  # still waiting for its last records
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task="default") == 0  # but not running
    logs(
        server, [*tool_use("s1", "p1", "t1"), request("r2", "s1", "p1", (402, 10, 0, 0)), answer("s1", "p1")]
    )
    time.sleep(HOOK_JOIN * 1.2)
    assert executions(reg, "success") == 1
    assert requests_in_executions(reg) == 2
    assert val(reg, "claude_execution_tokens_sum", agent=AGENT, task="default", type="input") == 803


@pytest.mark.integration
def test_text_then_a_tool_call_then_529s_is_a_failed_turn(server, reg):
    records = [prompt("s1", "p1"), request("r1", "s1", "p1", (100, 10, 0, 0)), answer("s1", "p1")]
    records += tool_use("s1", "p1", "t1")
    records += [
        event("api_error", "s1", **{"prompt.id": "p1"}, model=SONNET, status_code=529, attempt=3,
              duration_ms=30, error="Overloaded", query_source="sdk"),
        event("api_retries_exhausted", "s1", **{"prompt.id": "p1"}, model=SONNET, status_code=529,
              total_attempts=3, total_retry_duration_ms=4500),
    ]  # fmt: skip
    logs(server, records)
    assert (executions(reg, "success"), executions(reg, "error")) == (0, 1)
    assert requests_in_executions(reg) == 2
    assert val(reg, "claude_code_retries_exhausted_total", agent=AGENT) == 1
    assert val(reg, "claude_code_retry_seconds_total", agent=AGENT) == 4.5
    # The retries come from api_error's attempt (3 attempts: 2 retries), not again from total_attempts.
    assert val(reg, "claude_retries_total", agent=AGENT, model=SONNET, reason="529", error_code="none") == 2


@pytest.mark.integration
def test_a_subagent_is_its_own_task_inside_its_parent_turn(server, reg):
    # Main loop: r1 (Task tool call) and r4 (final text); the sub-agent: r2 and r3, with its own replies.
    records = [prompt("s1", "p1"), request("r1", "s1", "p1", (100, 10, 0, 0)), answer("s1", "p1")]
    records += [
        request("r2", "s1", "p1", (200, 20, 0, 0), query_source=SUBAGENT),
        answer("s1", "p1", SUBAGENT),
        request("r3", "s1", "p1", (300, 30, 0, 0), query_source=SUBAGENT),
        answer("s1", "p1", SUBAGENT),
        request("r4", "s1", "p1", (400, 40, 0, 0)),
        answer("s1", "p1"),
    ]
    logs(server, records)
    assert executions(reg, "success") == 0
    hook(server, hook_event_name="Stop", session_id="s1")
    # Each request counts towards one execution, as with nested execution() blocks: 2 + 2 of 4.
    assert (executions(reg, "success"), requests_in_executions(reg)) == (1, 2)
    assert (executions(reg, "success", SUBAGENT), requests_in_executions(reg, SUBAGENT)) == (1, 2)
    assert val(reg, "claude_execution_tokens_sum", agent=AGENT, task="default", type="input") == 500
    assert val(reg, "claude_execution_tokens_sum", agent=AGENT, task=SUBAGENT, type="input") == 500
    assert requests(reg) == 4


@pytest.mark.integration
def test_a_subagent_that_answered_is_not_in_flight(server, reg):
    records = [prompt("s1", "p1"), request("r1", "s1", "p1", (100, 10, 0, 0))]
    records += [request("r2", "s1", "p1", (200, 20, 0, 0), query_source=SUBAGENT)]
    logs(server, records)
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task=SUBAGENT) == 1
    logs(server, [answer("s1", "p1", SUBAGENT)])
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task=SUBAGENT) == 0
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task="default") == 1
    # Another sub-agent request, then the main loop's final reply: nothing is running any more.
    logs(server, [request("r3", "s1", "p1", (200, 20, 0, 0), query_source=SUBAGENT), answer("s1", "p1")])
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task=SUBAGENT) == 0
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task="default") == 0
    assert val(reg, "claude_execution_longest_running_seconds", agent=AGENT) == 0


@pytest.mark.integration
@pytest.mark.parametrize("refusal_first", [False, True], ids=["request-then-refusal", "refusal-then-request"])
def test_a_refusal_is_counted_and_its_turn_goes_on(server, reg, refusal_first):
    refusal = event("api_refusal", "s1", **{"prompt.id": "p1"}, model=SONNET, request_id="r2", attempt=1,
                    query_source="sdk", speed="normal", has_category=True, category="cyber")  # fmt: skip
    refused = request("r2", "s1", "p1", (200, 5, 0, 0))
    records = [prompt("s1", "p1"), request("r1", "s1", "p1", (100, 10, 0, 0)), answer("s1", "p1")]
    records += tool_use("s1", "p1", "t1")
    records += [refusal, refused] if refusal_first else [refused, refusal]
    # The real CLI (2.1.328) then tells the model its reply was withheld and asks once more.
    records += [request("r3", "s1", "p1", (300, 7, 0, 0)), answer("s1", "p1")]
    logs(server, records)
    assert executions(reg, "success") == 0  # a refusal does not end the turn
    hook(server, hook_event_name="Stop", session_id="s1")
    assert executions(reg, "success") == 1
    assert requests_in_executions(reg) == 3
    assert requests(reg) == 3
    assert val(reg, "claude_refusals_total", agent=AGENT, model=SONNET, category="cyber") == 1
    assert val(reg, "claude_stop_reasons_total", agent=AGENT, model=SONNET, stop_reason="refusal") == 1


@pytest.mark.integration
def test_the_sessions_next_prompt_and_session_end_end_turns(server, reg):
    logs(server, [prompt("s1", "p1"), request("r1", "s1", "p1", (100, 10, 0, 0)), answer("s1", "p1")])
    logs(server, [prompt("s1", "p2"), request("r2", "s1", "p2", (100, 10, 0, 0)), answer("s1", "p2")])
    assert (executions(reg, "success"), requests_in_executions(reg)) == (1, 1)  # p2 ended p1
    hook(server, hook_event_name="SessionEnd", session_id="s1", reason="prompt_input_exit")
    assert (executions(reg, "success"), requests_in_executions(reg)) == (2, 2)


@pytest.mark.integration
def test_a_turn_whose_last_news_is_a_reply_is_not_in_flight(server, reg):
    logs(server, [prompt("s1", "p1"), request("r1", "s1", "p1", (100, 10, 0, 0))])
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task="default") == 1
    logs(server, [answer("s1", "p1")])
    # The process may have exited after its answer: no timeout page for it, and no execution either yet.
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task="default") == 0
    assert val(reg, "claude_execution_longest_running_seconds", agent=AGENT) == 0
    logs(server, tool_use("s1", "p1", "t1"))  # it was not over: a tool runs
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task="default") == 1
    hook(server, hook_event_name="Stop", session_id="s1")
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task="default") == 0
    assert executions(reg, "success") == 1


@pytest.mark.integration
def test_a_stop_hook_finds_its_turn_by_prompt_id_without_session_ids(server, reg):
    records = _process("p1", "r1", None)  # OTEL_METRICS_INCLUDE_SESSION_ID=false
    logs(server, records)
    assert executions(reg, "success") == 0
    # The hook always has the session id, and (2.1.328) the turn's prompt_id.
    hook(server, hook_event_name="Stop", session_id="9f3c", prompt_id="p1", stop_hook_active=False)
    assert (executions(reg, "success"), requests_in_executions(reg)) == (1, 1)


@pytest.mark.integration
def test_a_stop_hook_without_a_session_id_is_refused_by_name(server, reg):
    body = json.dumps({"hook_event_name": "Stop", "prompt_id": "p1"}).encode()
    status, answer = post(server, "/v1/hooks", body, "application/json")
    assert status == 400
    assert json.loads(answer)["problems"] == [
        "session_id: required (it joins the hook to the session's turn)"
    ]
    assert val(reg, "claude_exporter_events_total", source="hooks", result="rejected") == 1


# -- finding 6: a command past its timeout ------------------------------------------------------------------


@pytest.mark.integration
def test_a_command_past_its_timeout_is_a_tool_error(server, reg):
    # As the CLI 2.1.328 reports it: moved to the background, a success, with timedOutAfterMs in the hook.
    response = {
        "stdout": "",
        "stderr": "",
        "interrupted": False,
        "backgroundTaskId": "b1",
        "timedOutAfterMs": 1500,
    }
    hook(server, hook_event_name="PostToolUse", session_id="s1", tool_name="Bash", tool_use_id="t1",
         tool_response=response, duration_ms=2353)  # fmt: skip
    result = event("tool_result", "s1", **{"prompt.id": "p1"}, tool_name="Bash", tool_use_id="t1",
                   success="true", duration_ms="2353", request_id="r1")  # fmt: skip
    logs(server, [request("r1", "s1", "p1", (60, 15, 0, 0)), result])
    blocks = {
        outcome: val(reg, "claude_code_blocks_executed_total", agent=AGENT, model=SONNET, tool="Bash",
                     outcome=outcome)
        for outcome in ("success", "tool_error", "nonzero_exit")
    }  # fmt: skip
    assert blocks == {"success": 0, "tool_error": 1, "nonzero_exit": 0}
    # The tool result itself is what the CLI says it was.
    assert val(reg, "claude_code_tool_results_total", agent=AGENT, tool="Bash", outcome="success") == 1


# -- finding 2: a turn that fails on its only attempt ends at once ----------------------------------------


@pytest.mark.integration
def test_a_turn_that_fails_on_its_only_attempt_ends_at_once(server, reg):
    # CLAUDE_CODE_MAX_RETRIES=0: one 529, one api_error with attempt 1, no api_retries_exhausted, exit 1.
    failure = event("api_error", "s1", **{"prompt.id": "p1"}, model=SONNET, status_code=529, attempt=1,
                    duration_ms=1500, error="Overloaded", query_source="sdk")  # fmt: skip
    logs(server, [prompt("s1", "p1"), failure])
    assert executions(reg, "error") == 1
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task="default") == 0
    assert val(reg, "claude_execution_longest_running_seconds", agent=AGENT) == 0
    assert requests(reg, outcome="error") == 1


# -- finding 3 and issue 18 row 5: de-duplication that cannot merge distinct work -------------------------


def _process(prompt_id: str, rid: str, session: str | None) -> list[dict[str, Any]]:
    """One ``claude -p`` process: its sequence numbers from 0, like every process's."""
    records = [
        prompt("x", prompt_id, 0),
        {**request(rid, "x", prompt_id, (322, 32, 0, 0)), "event.sequence": 1},
        answer("x", prompt_id, sequence=2),
    ]
    for record in records:
        if session is None:
            del record["session.id"]  # OTEL_METRICS_INCLUDE_SESSION_ID=false
        else:
            record["session.id"] = session
    return records


@pytest.mark.integration
def test_processes_without_session_ids_are_counted_apart(server, reg):
    for n in range(3):
        logs(server, _process(f"p{n}", f"r{n}", None))
    assert requests(reg) == 3
    assert val(reg, "claude_tokens_total", agent=AGENT, model=SONNET, type="input") == 3 * 322
    assert val(reg, "claude_exporter_events_total", source="otlp", result="accepted") == 9
    assert val(reg, "claude_exporter_events_total", source="otlp", result="duplicate") == 0


@pytest.mark.integration
def test_continue_and_resume_keep_the_session_and_still_count(server, reg):
    logs(server, _process("p1", "r1", "s1"))
    logs(server, _process("p2", "r2", "s1"))  # --resume: the same session id, the sequence from 0 again
    assert requests(reg) == 2
    assert (executions(reg, "success"), requests_in_executions(reg)) == (1, 1)  # p2's prompt ended p1
    hook(server, hook_event_name="Stop", session_id="s1")
    assert (executions(reg, "success"), requests_in_executions(reg)) == (2, 2)


@pytest.mark.integration
def test_a_gateway_repeating_or_omitting_request_ids_does_not_merge_requests(server, reg):
    records = [prompt("s1", "p1")]
    for n, rid in enumerate(["req_same", "req_same", None, None]):
        record = request(rid or "", "s1", "p1", (100, 10, 0, 0), client_request_id=f"c{n}")
        if rid is None:
            del record["request_id"]
        records.append(record)
    logs(server, records)
    assert requests(reg) == 4
    assert val(reg, "claude_exporter_events_total", source="otlp", result="duplicate") == 0


@pytest.mark.integration
def test_resent_batches_count_once_and_are_counted_as_duplicates(server, reg):
    records = [prompt("s1", "p1"), request("r1", "s1", "p1", (100, 10, 0, 0)), answer("s1", "p1")]
    body = logs_request(records)
    for _ in range(3):  # an OTLP exporter retrying after lost answers sends the very same records
        assert post(server, "/v1/logs", body)[0] == 200
    # The same request in another record (a new sequence number): its request and client request ids.
    logs(server, [request("r1", "s1", "p1", (100, 10, 0, 0))])
    assert requests(reg) == 1
    assert val(reg, "claude_exporter_events_total", source="otlp", result="accepted") == 3
    assert val(reg, "claude_exporter_events_total", source="otlp", result="duplicate") == 2 * 3 + 1


# -- findings 4 and 5: prices from the CLI's own fields, through the SDK agents' price function -----------


@pytest.mark.integration
def test_one_hour_cache_writes_are_priced_at_the_one_hour_rate(server, reg):
    record = request("r1", "s1", "p1", (1000, 200, 1500, 2000))
    record.update(cache_creation_5m_tokens=500, cache_creation_1h_tokens=1000)
    logs(server, [record])
    # 1000 x 3 + 200 x 15 + 500 x 3.75 + 1000 x 6 + 2000 x 0.30 = 3000 + 3000 + 1875 + 6000 + 600 per
    # million: USD 0.014475 (all 1500 writes at the 5-minute rate would be 0.012225).
    assert val(reg, "claude_cost_usd_total", agent=AGENT, model=SONNET) == pytest.approx(0.014475, rel=1e-12)
    assert val(reg, "claude_tokens_total", agent=AGENT, model=SONNET, type="cache_creation") == 1500


@pytest.mark.integration
def test_cache_writes_the_split_leaves_out_are_five_minute_writes(server, reg):
    # The CLI sends 0 and 0 when the API gave no breakdown; here 1000 of 1500 writes are 1-hour ones.
    unsplit = request("r1", "s1", "p1", (0, 0, 5, 0), cache_creation_5m_tokens=0, cache_creation_1h_tokens=0)
    partial = request("r2", "s1", "p1", (0, 0, 1500, 0), cache_creation_1h_tokens=1000)
    status, body = post(server, "/v1/logs", logs_request([unsplit, partial]))
    assert status == 200 and b"rejected" not in body.lower()
    assert requests(reg) == 2
    # (5 + 500) x 3.75 + 1000 x 6 per million = 1893.75 + 6000: USD 0.00789375.
    cost = val(reg, "claude_cost_usd_total", agent=AGENT, model=SONNET)
    assert cost == pytest.approx(0.00789375, rel=1e-12)


@pytest.mark.integration
def test_fast_mode_is_priced_at_fast_rates_or_left_unpriced(server, reg):
    logs(
        server,
        [
            request("r1", "s1", "p1", (1000, 100, 0, 0), model=OPUS, speed="fast", cost_usd=0.015),
            request("r2", "s1", "p1", (1000, 100, 0, 0), model=SONNET, speed="fast", cost_usd=0.006),
        ],
    )
    # Opus 4.8 fast: 1000 x 10 + 100 x 50 per million = USD 0.015 (standard rates would say 0.0075).
    assert val(reg, "claude_cost_usd_total", agent=AGENT, model=OPUS) == pytest.approx(0.015, rel=1e-12)
    # Sonnet 4.5 has no fast figure: unpriced for its speed, never priced at another rate, nor at cost_usd.
    assert val(reg, "claude_cost_usd_total", agent=AGENT, model=SONNET) == 0
    assert val(reg, "claude_exporter_unpriced_tokens_total", model=SONNET, reason="speed") == 1100


# -- finding 7: documented events that carry a fact users want ----------------------------------------------


def decision(tool: str, use_id: str, decision: str, source: str) -> dict[str, Any]:
    return event("tool_decision", tool_name=tool, tool_use_id=use_id, decision=decision, source=source)


@pytest.mark.integration
def test_tool_decisions_compactions_and_internal_errors_are_counted(server, reg):
    logs(
        server,
        [
            decision("Bash", "t1", "reject", "user_reject"),
            decision("Bash", "t2", "accept", "config"),
            decision("Edit", "t3", "accept", "classifier"),
            event("compaction", trigger="auto", success="true", duration_ms=900, pre_tokens=9),
            event("compaction", trigger="manual", success="false", duration_ms=90),
            event("internal_error", error_name="TypeError", error_code="E1"),
        ],
    )
    decisions = {
        (tool, decision, source): val(
            reg, "claude_code_tool_decisions_total", agent=AGENT, tool=tool, decision=decision, source=source
        )
        for tool, decision, source in [
            ("Bash", "reject", "user_reject"),
            ("Bash", "accept", "config"),
            ("Edit", "accept", "other"),
        ]
    }
    assert set(decisions.values()) == {1}
    assert val(reg, "claude_code_compactions_total", agent=AGENT, trigger="auto", outcome="success") == 1
    assert val(reg, "claude_code_compactions_total", agent=AGENT, trigger="manual", outcome="failure") == 1
    assert val(reg, "claude_code_internal_errors_total", agent=AGENT) == 1


# -- issue 18 rows 4 and 10: memory bounded in bytes, hooks over memory counted ----------------------------


def _ingest(memory: int = 1000, hook_join: float = 3600) -> tuple[ClaudeCodeIngest, Any]:
    from claude_exporter.recording.state import ACTIVE

    rec = ACTIVE.recorder
    assert rec is not None
    return ClaudeCodeIngest(
        rec, OtlpConfig(memory=memory, turn_idle_seconds=3600, hook_join_seconds=hook_join)
    ), rec


def _big(n: int, kind: str) -> str:
    return f"{kind}{n:08d}" + "x" * 4096  # a 4 KB id


@pytest.mark.unit
def test_memory_for_remembered_ids_is_bounded_in_bytes(reg):
    ingest, _ = _ingest(memory=100_000)
    res = resource()

    def batch(start: int) -> list[LogEvent]:
        out = []
        for n in range(start, start + 500):
            attrs = {**identity(_big(n, "s")), "prompt.id": _big(n, "p"), "event.sequence": 0}
            out.append(LogEvent("user_prompt", {**attrs, "event.name": "user_prompt"}, res, n))
            out.append(
                LogEvent("tool_result", {**attrs, "tool_name": "Read", "tool_use_id": _big(n, "t"),
                                         "success": "true", "event.sequence": 1}, res, n)
            )  # fmt: skip
        return out

    ingest.apply_logs(batch(0))  # warm up: series, caches
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(500, 2500, 500):
            ingest.apply_logs(batch(start))
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 2,000 turns with 4 KB session, prompt and tool-use ids: what is kept per turn is digests and the
    # open turn, far below one id's 4 KB (before: every id kept whole, 3 or more per turn).
    per_turn = kept / 2000
    assert per_turn < 2048, per_turn


@pytest.mark.unit
def test_hooks_pushed_out_of_memory_are_counted_alone(reg):
    ingest, _ = _ingest(memory=1000)
    for n in range(1001):
        result = ToolResult("Read", f"toolu_{n}", True, 0.01, None, None, None)
        assert ingest.apply_hook(None, result, False)
    counted = ingest.store.counters["claude_code_tool_results_total"]
    # The oldest hook left the waiting list for the 1001st: counted alone, at once, not lost.
    assert counted == {(AGENT, "Read", "success"): 1}
    # Its tool_result event, arriving later, does not count it again.
    attrs = {"tool_name": "Read", "tool_use_id": "toolu_0", "success": "true"}
    late = LogEvent("tool_result", attrs, resource(), 1)
    ingest.apply_logs([late])
    assert counted == {(AGENT, "Read", "success"): 1}


# -- property: whatever the processes, sessions, ids and re-sends, each request and turn counts once --------


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[list[list[LogEvent]]], int, list[tuple[str, str]]]:
    """Processes (some without session ids, some resuming another's session, request ids repeated or
    left out), each a list of batches of records in order; the requests sent; each turn's session (as the
    Stop hook knows it) and prompt."""
    processes: list[list[list[LogEvent]]] = []
    requests_sent, turns = 0, []
    clock = itertools.count(1)
    for n in range(draw(st.integers(1, 4))):
        session = draw(st.sampled_from([None, "s-shared", f"s{n}"]))
        sequence = itertools.count()  # from 0 in every process
        out: list[LogEvent] = []

        def record(
            name: str, prompt_id: str, session: Any = session, sequence: Any = sequence, **attrs: Any
        ) -> Any:
            base = {"event.name": name, "event.sequence": next(sequence), "prompt.id": prompt_id, **attrs}
            if session is not None:
                base["session.id"] = session
            return LogEvent(name, base, resource(), T0 + next(clock))

        for t in range(draw(st.integers(1, 3))):
            prompt_id = f"p{n}-{t}"
            out.append(record("user_prompt", prompt_id))
            for r in range(draw(st.integers(0, 3))):
                rid = draw(st.sampled_from([None, "req-same", f"req-{n}-{t}-{r}"]))
                ids = {"client_request_id": f"c{n}-{t}-{r}"} | ({} if rid is None else {"request_id": rid})
                out.append(record("api_request", prompt_id, model=SONNET, input_tokens=10, output_tokens=1,
                                  query_source="sdk", **ids))  # fmt: skip
                out.append(record("assistant_response", prompt_id, query_source="sdk"))
                requests_sent += 1
            turns.append((session or f"hook-only-s{n}", prompt_id))
        size = draw(st.integers(1, 4))
        processes.append([out[i : i + size] for i in range(0, len(out), size)])
    return processes, requests_sent, turns


@pytest.mark.unit
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fleet=fleets(), data=st.data())
def test_every_request_and_turn_counts_once_whatever_the_fleet_sends(reg, fleet, data):
    processes, requests_sent, turns = fleet
    ingest, _ = _ingest(hook_join=1e-9)  # a Stop hook's turn ends at the next sweep
    before = (requests(reg), executions(reg, "success"))
    queues = [list(batches) for batches in processes]
    sent: list[list[LogEvent]] = []
    while any(queues):  # the processes' batches interleaved, each process's in order
        queue = data.draw(st.sampled_from([q for q in queues if q]))
        sent.append(queue.pop(0))
        ingest.apply_logs(sent[-1])
    resent = data.draw(st.lists(st.sampled_from(sent), max_size=4))  # answers lost: the same batches again
    duplicates = sum(ingest.apply_logs(batch)[2] for batch in resent)
    assert duplicates == sum(len(batch) for batch in resent)
    for session, prompt_id in turns:  # every turn's Stop hook (a later prompt may have ended it already)
        ingest.apply_stop(SessionStop(session, "Stop", prompt_id))
    ingest.sweep()
    assert requests(reg) - before[0] == requests_sent
    assert executions(reg, "success") - before[1] == len(turns)
    assert not ingest.turns
