"""The structured event log: one JSON line per finished execution, with the seed's field names.

Every test drives the real SDK against the fake API (or opens executions directly), with a configuration
FILE naming the event log's destination, and reads what was actually written: the file, stdout or stderr.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anthropic
import claude_exporter as ce
import claude_exporter.lifecycle
import pytest
import yaml
from claude_exporter.exposition.eventlog import LOGGER_NAME, event_log_listener
from claude_exporter.recording.state import ACTIVE
from claude_exporter.testing import Reply
from conftest import MODEL, expected_cost, is_close
from prometheus_client import CollectorRegistry

PROMPT = "PROMPT-zebra-quartz-7731 summarise the secret plan"
API_KEY = "sk-ant-test-SECRET123"

# The seed's fields, in its order, then the documented extras.
SUCCESS_FIELDS = [
    "event",
    "execution_id",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "stop_reason",
    "timestamp",
]
ERROR_HEAD = ["event", "execution_id", "error_type", "error_message", "duration_ms"]
EXTRA_FIELDS = ["agent", "task", "model", "cache_creation_input_tokens", "cache_read_input_tokens"]


# -- helpers -------------------------------------------------------------------------------------------------


def _reset_logger() -> None:
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.fixture(autouse=True)
def clean_event_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No instrumentation, no handler on the event logger and no config from the environment, before and
    after every test (the logger is process-wide and outlives ``uninstrument()``)."""
    monkeypatch.delenv("CLAUDE_EXPORTER_CONFIG", raising=False)
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    _reset_logger()
    try:
        yield
    finally:
        ce.uninstrument()
        _reset_logger()


def write_config(
    tmp_path: Path,
    *,
    agents: dict[str, Any] | None = None,
    event_log: dict[str, Any] | None = None,
    name: str = "config.yaml",
) -> Path:
    doc: dict[str, Any] = {"monitoring": agents if agents is not None else {"coder": {"sampling_rate": 1.0}}}
    if event_log is not None:
        doc["exporter"] = {"event_log": event_log}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def file_config(tmp_path: Path, **agents: Any) -> tuple[Path, Path]:
    """A config file whose event log goes to ``events.jsonl`` in tmp_path; returns (config, log)."""
    log = tmp_path / "events.jsonl"
    config = write_config(
        tmp_path, agents=agents or None, event_log={"destination": "file", "path": str(log)}
    )
    return config, log


def instrument(config: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    ce.instrument(config=str(config), registry=registry)
    return registry


def flush() -> None:
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        handler.flush()


def read_lines(path: Path) -> list[dict[str, Any]]:
    flush()
    if not path.exists():
        return []
    return parse_lines(path.read_text(encoding="utf-8"))


def parse_lines(text: str) -> list[dict[str, Any]]:
    """Every line is one JSON object (nothing else may be interleaved)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def parse_utc(stamp: str) -> datetime:
    assert stamp.endswith("Z"), stamp
    parsed = datetime.fromisoformat(stamp[:-1] + "+00:00")
    assert parsed.utcoffset() == timedelta(0)
    return parsed


def create(client: anthropic.Anthropic, prompt: str = PROMPT) -> Any:
    return client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": prompt}])


def fail(client: anthropic.Anthropic) -> BaseException:
    with pytest.raises(anthropic.APIError) as info:
        create(client)
    return info.value


# -- the file destination and the field names ----------------------------------------------------------------


@pytest.mark.integration
def test_success_line_has_the_seed_fields_in_order(tmp_path, fake_anthropic):
    config, log = file_config(tmp_path, coder={"sampling_rate": 1.0})
    instrument(config)
    fake_anthropic.script(
        Reply(
            latency=0.05,
            input_tokens=120,
            output_tokens=45,
            cache_creation_input_tokens=30,
            cache_read_input_tokens=7,
            stop_reason="max_tokens",
        )
    )
    before = datetime.now(timezone.utc)
    with ce.execution("refactor", agent="coder"):
        create(fake_anthropic.client(max_retries=0))
    after = datetime.now(timezone.utc)

    [line] = read_lines(log)
    keys = list(line)
    assert keys[: len(SUCCESS_FIELDS)] == SUCCESS_FIELDS
    assert keys[len(SUCCESS_FIELDS) : len(SUCCESS_FIELDS) + len(EXTRA_FIELDS)] == EXTRA_FIELDS
    assert line["event"] == "claude_execution_complete"
    assert isinstance(line["execution_id"], str)
    assert line["execution_id"]
    assert isinstance(line["duration_ms"], int)
    assert 50 <= line["duration_ms"] < 2000
    assert (line["input_tokens"], line["output_tokens"]) == (120, 45)
    assert line["stop_reason"] == "max_tokens"
    stamp = parse_utc(line["timestamp"])
    assert before - timedelta(seconds=1) <= stamp <= after + timedelta(seconds=1)
    assert (line["agent"], line["task"], line["model"]) == ("coder", "refactor", MODEL)
    assert (line["cache_creation_input_tokens"], line["cache_read_input_tokens"]) == (30, 7)
    assert line["requests"] == 1
    cost = expected_cost(input=120, output=45, cache_5m=30, cache_read=7)
    assert is_close(line["cost_usd"], round(cost, 8))
    assert "error_type" not in line
    assert "error_message" not in line


@pytest.mark.integration
def test_every_execution_writes_exactly_one_line(tmp_path, fake_anthropic):
    config, log = file_config(tmp_path, coder={"sampling_rate": 1.0})
    instrument(config)
    client = fake_anthropic.client(max_retries=0)
    fake_anthropic.script(*(Reply(input_tokens=i + 1, output_tokens=2 * i + 1) for i in range(7)))
    # An agent loop of three requests is ONE execution, so one line with the sums.
    with ce.execution("loop", agent="coder"):
        for _ in range(3):
            create(client)
    # Lone requests are executions of their own (task "default", the default agent).
    for _ in range(4):
        create(client)

    lines = read_lines(log)
    assert len(lines) == 5
    assert [line["event"] for line in lines] == ["claude_execution_complete"] * 5
    loop = lines[0]
    assert (loop["agent"], loop["task"], loop["requests"]) == ("coder", "loop", 3)
    assert (loop["input_tokens"], loop["output_tokens"]) == (1 + 2 + 3, 1 + 3 + 5)
    assert [(ln["agent"], ln["task"], ln["input_tokens"]) for ln in lines[1:]] == [
        ("default", "default", n) for n in (4, 5, 6, 7)
    ]
    assert len({line["execution_id"] for line in lines}) == 5


@pytest.mark.integration
def test_error_lines_carry_type_message_and_duration(tmp_path, fake_anthropic):
    config, log = file_config(tmp_path, coder={"sampling_rate": 1.0})
    instrument(config)
    client = fake_anthropic.client(max_retries=0)
    fake_anthropic.script(Reply(status=529, latency=0.03), Reply(status=500))

    fail(client)  # a lone failed request
    with pytest.raises(anthropic.InternalServerError), ce.execution("step", agent="coder"):
        create(client)  # the error escapes the execution
    with pytest.raises(RuntimeError), ce.execution("tool", agent="coder"):
        raise RuntimeError("the tool crashed")  # an execution failing for the agent's own reasons

    lines = read_lines(log)
    assert [line["event"] for line in lines] == ["claude_execution_error"] * 3
    for line in lines:
        assert list(line)[: len(ERROR_HEAD)] == ERROR_HEAD
        assert isinstance(line["duration_ms"], int)
        assert line["duration_ms"] >= 0
        parse_utc(line["timestamp"])
    assert lines[0]["error_type"] == "OverloadedError"
    assert "Overloaded" in lines[0]["error_message"]
    assert lines[0]["duration_ms"] >= 30
    assert (lines[0]["agent"], lines[0]["task"]) == ("default", "default")
    assert lines[1]["error_type"] == "InternalServerError"
    assert (lines[1]["agent"], lines[1]["task"]) == ("coder", "step")
    assert lines[2]["error_type"] == "RuntimeError"
    # The application's own exception: its type, never its message, which may quote a prompt.
    assert lines[2]["error_type"] == "RuntimeError"
    assert lines[2]["error_message"] is None


# -- sampling ------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_sampling_zero_writes_no_success_but_every_error(tmp_path, fake_anthropic):
    config, log = file_config(tmp_path, quiet={"sampling_rate": 0.0})
    instrument(config)
    client = fake_anthropic.client(max_retries=0)
    fake_anthropic.script(Reply(), Reply(status=500), Reply(), Reply(status=429), Reply(status=401))
    outcomes = []
    for _ in range(5):
        with ce.execution("work", agent="quiet"):
            try:
                create(client)
                outcomes.append("ok")
            except anthropic.APIStatusError as err:
                outcomes.append(type(err).__name__)
    for _ in range(20):
        with ce.execution("idle", agent="quiet"):
            pass
    with pytest.raises(ValueError), ce.execution("boom", agent="quiet"):
        raise ValueError("boom")

    lines = read_lines(log)
    # The failed requests were caught inside the execution, so those executions succeeded: nothing written.
    assert outcomes == ["ok", "InternalServerError", "ok", "RateLimitError", "AuthenticationError"]
    assert [(line["event"], line["task"], line["error_type"]) for line in lines] == [
        ("claude_execution_error", "boom", "ValueError")
    ]


@pytest.mark.integration
def test_sampling_zero_keeps_every_failed_lone_request(tmp_path, fake_anthropic):
    # Lone requests belong to the default agent, named "default" here to give it sampling 0.
    log = tmp_path / "events.jsonl"
    config = write_config(
        tmp_path,
        agents={"default": {"sampling_rate": 0.0}},
        event_log={"destination": "file", "path": str(log)},
    )
    instrument(config)
    client = fake_anthropic.client(max_retries=0)
    fake_anthropic.script(*([Reply()] * 5), Reply(status=500), Reply(status=529), Reply(status=401))
    for _ in range(5):
        create(client)
    errors = [type(fail(client)).__name__ for _ in range(3)]

    lines = read_lines(log)
    assert errors == ["InternalServerError", "OverloadedError", "AuthenticationError"]
    assert [line["error_type"] for line in lines] == errors
    assert all(line["event"] == "claude_execution_error" for line in lines)


@pytest.mark.unit
def test_sampling_is_per_agent(tmp_path):
    config, log = file_config(tmp_path, never={"sampling_rate": 0.0}, always={"sampling_rate": 1.0})
    instrument(config)
    for _ in range(30):
        for agent in ("never", "always", "unnamed"):  # unnamed agents get the default rate, 1.0
            with ce.execution("t", agent=agent):
                pass
    counts: dict[str, int] = {}
    for line in read_lines(log):
        counts[line["agent"]] = counts.get(line["agent"], 0) + 1
    assert counts == {"always": 30, "unnamed": 30}


@pytest.mark.unit
def test_sampling_half_is_statistically_half(tmp_path):
    config, log = file_config(tmp_path, half={"sampling_rate": 0.5})
    instrument(config)
    n = 4000
    for _ in range(n):
        with ce.execution("t", agent="half"):
            pass
    for _ in range(50):
        with pytest.raises(KeyError), ce.execution("t", agent="half"):
            raise KeyError("x")
    lines = read_lines(log)
    successes = sum(line["event"] == "claude_execution_complete" for line in lines)
    errors = sum(line["event"] == "claude_execution_error" for line in lines)
    # Binomial(4000, 0.5): sd = 31.6; 6 sd either side.
    assert 1810 <= successes <= 2190, successes
    assert errors == 50


@pytest.mark.unit
def test_sampling_uses_the_rate_as_a_threshold_on_the_rng(tmp_path, monkeypatch):
    """With a scripted random source: a success is written exactly when rng() < sampling_rate."""
    draws = itertools.cycle([0.1, 0.49, 0.5, 0.51, 0.99, 0.0])
    monkeypatch.setattr(
        claude_exporter.lifecycle,
        "event_log_listener",
        functools.partial(event_log_listener, rng=lambda: next(draws)),
    )
    config, log = file_config(tmp_path, half={"sampling_rate": 0.5})
    instrument(config)
    for i in range(6):
        with ce.execution(f"t{i}", agent="half"):
            pass
    assert [line["task"] for line in read_lines(log)] == ["t0", "t1", "t5"]


# -- other destinations --------------------------------------------------------------------------------------


@pytest.mark.integration
def test_stdout_destination(tmp_path, fake_anthropic, capfd):
    config = write_config(tmp_path, event_log={"destination": "stdout"})
    instrument(config)
    fake_anthropic.script(Reply(input_tokens=3, output_tokens=4))
    create(fake_anthropic.client(max_retries=0))
    flush()
    out, err = capfd.readouterr()
    [line] = parse_lines(out)
    assert line["event"] == "claude_execution_complete"
    assert list(line)[: len(SUCCESS_FIELDS)] == SUCCESS_FIELDS
    assert (line["input_tokens"], line["output_tokens"]) == (3, 4)
    assert "claude_execution" not in err


@pytest.mark.integration
@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "default-destination"])
def test_stderr_destination(tmp_path, fake_anthropic, capfd, explicit):
    config = write_config(tmp_path, event_log={"destination": "stderr"} if explicit else None)
    instrument(config)
    fake_anthropic.script(Reply(status=500))
    fail(fake_anthropic.client(max_retries=0))
    flush()
    out, err = capfd.readouterr()
    [line] = parse_lines(err)
    assert line["event"] == "claude_execution_error"
    assert line["error_type"] == "InternalServerError"
    assert "claude_execution" not in out


@pytest.mark.integration
def test_without_a_config_file_nothing_is_written(fake_anthropic, capfd):
    registry = CollectorRegistry()
    ce.instrument(registry=registry)
    client = fake_anthropic.client(max_retries=0)
    fake_anthropic.script(Reply(), Reply(status=500))
    create(client)
    fail(client)
    with pytest.raises(ValueError), ce.execution("t"):
        raise ValueError("x")
    out, err = capfd.readouterr()
    assert "claude_execution" not in err
    assert "claude_execution" not in out
    assert err == ""
    assert logging.getLogger(LOGGER_NAME).handlers == []


@pytest.mark.integration
def test_without_a_config_file_lines_go_to_the_applications_logging(fake_anthropic, caplog):
    """No handler of its own: an application that puts a handler on the logger gets the same JSON lines
    (a root logger at INFO alone does not ask for them: see test_core_defects)."""
    ce.instrument(registry=CollectorRegistry())
    fake_anthropic.script(Reply(input_tokens=9))
    seen: list[logging.LogRecord] = []
    own = logging.Handler()
    own.emit = seen.append  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(own)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
            create(fake_anthropic.client(max_retries=0))
    finally:
        logger.removeHandler(own)
    [record] = seen
    line = json.loads(record.getMessage())
    assert list(line)[: len(SUCCESS_FIELDS)] == SUCCESS_FIELDS
    assert line["input_tokens"] == 9


@pytest.mark.unit
def test_reinstrumenting_with_another_file_writes_to_the_new_destination(tmp_path):
    """uninstrument() then instrument() with a new config: the new event_log destination is used."""
    first_log = tmp_path / "first.jsonl"
    second_log = tmp_path / "second.jsonl"
    first = write_config(
        tmp_path, name="first.yaml", event_log={"destination": "file", "path": str(first_log)}
    )
    second = write_config(
        tmp_path, name="second.yaml", event_log={"destination": "file", "path": str(second_log)}
    )
    instrument(first)
    with ce.execution("one"):
        pass
    ce.uninstrument()
    instrument(second)
    with ce.execution("two"):
        pass
    assert [line["task"] for line in read_lines(first_log)] == ["one"]
    assert [line["task"] for line in read_lines(second_log)] == ["two"]


# -- never the prompt, never the API key ---------------------------------------------------------------------


@pytest.mark.integration
def test_never_the_prompt_nor_the_api_key(tmp_path, fake_anthropic, capfd):
    config, log = file_config(tmp_path, coder={"sampling_rate": 1.0})
    instrument(config)
    client = fake_anthropic.client(max_retries=0, api_key=API_KEY)
    fake_anthropic.script(
        Reply(text=f"echo: {PROMPT}"),
        Reply(status=401),  # AuthenticationError, as the real API answers a bad key
        Reply(status=401, error_message=f"invalid x-api-key {API_KEY}"),  # a proxy that echoes the key
        Reply(status=400, error_message=f"bad header Authorization: Bearer {API_KEY}"),
        Reply(status=500),
    )
    create(client)
    auth = fail(client)
    assert isinstance(auth, anthropic.AuthenticationError)
    echoed = fail(client)
    assert API_KEY in str(echoed)  # the exception itself carries it; the log must not
    fail(client)
    with pytest.raises(anthropic.InternalServerError), ce.execution("agent-step", agent="coder"):
        create(client)
    with pytest.raises(PermissionError), ce.execution("agent-step", agent="coder"):
        raise PermissionError(f"key {API_KEY} was refused")

    # The requests really carried both secrets.
    assert all(API_KEY in json.dumps(r.headers) for r in fake_anthropic.requests)
    assert all(PROMPT in r.raw_body.decode() for r in fake_anthropic.requests)

    flush()
    text = log.read_text(encoding="utf-8")
    lines = parse_lines(text)
    assert [line["event"] for line in lines] == ["claude_execution_complete"] + ["claude_execution_error"] * 5
    assert [line["error_type"] for line in lines[1:]] == [
        "AuthenticationError",
        "AuthenticationError",
        "BadRequestError",
        "InternalServerError",
        "PermissionError",
    ]
    out, err = capfd.readouterr()
    for where in (text, out, err):
        assert PROMPT not in where
        assert "zebra-quartz" not in where
        assert API_KEY not in where
        assert "SECRET123" not in where


@pytest.mark.integration
def test_ingested_events_reach_the_event_log_as_sdk_executions_do(tmp_path):
    """/v1/events and --tail end their executions the one way an execution ends, so the event log (and the
    health window) see an agent in another language as they see one on the SDK."""
    from claude_exporter.ingest.events import apply_events, parse_event

    config, log = file_config(tmp_path, coder={"sampling_rate": 1.0})
    instrument(config)
    rec = ACTIVE.recorder
    assert rec is not None
    events = [
        parse_event({"event": "claude_execution_complete", "agent": "coder", "task": "port", "model": MODEL,
                     "duration_ms": 1500, "input_tokens": 10, "output_tokens": 20, "requests": 3}),
        parse_event({"event": "claude_execution_error", "agent": "coder", "duration_ms": 250,
                     "error_type": "RateLimitError", "error_message": "slow down"}),
    ]  # fmt: skip
    assert apply_events(rec, events) == 2  # type: ignore[arg-type]
    lines = read_lines(log)
    assert [(ln["event"], ln["task"]) for ln in lines] == [
        ("claude_execution_complete", "port"),
        ("claude_execution_error", "default"),
    ]
    assert (lines[0]["input_tokens"], lines[0]["output_tokens"], lines[0]["requests"]) == (10, 20, 3)
    assert lines[0]["duration_ms"] == 1500
    assert (lines[1]["error_type"], lines[1]["error_message"]) == ("RateLimitError", "slow down")
