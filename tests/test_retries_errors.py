"""Retries, 429s and errors: per-attempt accounting through the attempt seam (httpx2 send), and every failure
by the SDK's class name and re-raised as the very same exception object."""

from __future__ import annotations

import anthropic
import claude_exporter as ce
import pytest
from claude_exporter.testing import Reply
from conftest import (
    MODEL,
    duration,
    executions,
    kw,
    requests,
    sdk_frames,
    tokens,
    val,
)

pytestmark = pytest.mark.integration


def retries(reg, reason: str) -> float:
    return val(reg, "claude_retries_total", agent="default", model=MODEL, reason=reason, error_code="none")


def errors(reg, error_type: str, agent: str = "default") -> float:
    return val(reg, "claude_errors_total", agent=agent, model=MODEL, error_type=error_type, error_code="none")


def rate_limited(reg) -> float:
    return val(reg, "claude_rate_limited_total", agent="default", model=MODEL, error_code="none")


def test_429_twice_then_success(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(status=429, retry_after=0.2),
        Reply(status=429, retry_after=0.2),
        Reply(input_tokens=10, output_tokens=20),
    )
    msg = fake_anthropic.client(max_retries=2).messages.create(**kw())

    assert msg.usage.output_tokens == 20
    assert [r.retry_count for r in fake_anthropic.requests] == [0, 1, 2]
    assert retries(reg, "429") == 2
    assert rate_limited(reg) == 2
    assert requests(reg) == (1, 0)  # one request, retries included
    count, seconds = duration(reg)
    assert count == 1
    assert seconds >= 0.4  # the two waits are inside the request's wall time
    assert errors(reg, "RateLimitError") == 0
    assert tokens(reg)["input"] == 10
    assert executions(reg) == (1, 0)


def test_529_then_connection_error_then_success(reg, fake_anthropic, fast_backoff):
    fake_anthropic.script(Reply(status=529, retry_after=0.01), Reply(drop_connection=True), Reply())
    fake_anthropic.client(max_retries=2).messages.create(**kw())

    assert retries(reg, "529") == 1
    assert retries(reg, "connection") == 1
    assert rate_limited(reg) == 0
    assert requests(reg) == (1, 0)
    assert duration(reg)[0] == 1


def test_timeout_then_success_counts_a_timeout_retry(reg, fake_anthropic, fast_backoff):
    fake_anthropic.script(Reply(latency=1.0), Reply())
    fake_anthropic.client(max_retries=1, timeout=0.2).messages.create(**kw())

    assert retries(reg, "timeout") == 1
    assert retries(reg, "connection") == 0
    assert requests(reg) == (1, 0)


def test_retries_exhausted(reg, fake_anthropic):
    fake_anthropic.script(*(Reply(status=429, retry_after=0.01) for _ in range(3)))
    with pytest.raises(anthropic.RateLimitError):
        fake_anthropic.client(max_retries=2).messages.create(**kw())

    assert retries(reg, "429") == 2
    assert rate_limited(reg) == 3  # every 429 attempt
    assert requests(reg) == (0, 1)
    assert errors(reg, "RateLimitError") == 1
    assert executions(reg) == (0, 1)


def test_500_and_503_retries_by_status(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(status=500, retry_after=0.01), Reply(status=503, retry_after=0.01), Reply(status=200)
    )
    fake_anthropic.client(max_retries=2).messages.create(**kw())
    assert retries(reg, "500") == 1
    assert retries(reg, "503") == 1
    assert requests(reg) == (1, 0)


def test_stream_retried_before_the_first_event(reg, fake_anthropic):
    fake_anthropic.script(Reply(status=529, retry_after=0.01), Reply(output_tokens=12))
    for _ in fake_anthropic.client(max_retries=1).messages.create(**kw(), stream=True):
        pass
    assert retries(reg, "529") == 1
    assert requests(reg) == (1, 0)
    assert tokens(reg)["output"] == 12


STATUS_ERRORS = [
    (400, anthropic.BadRequestError),
    (401, anthropic.AuthenticationError),
    (403, anthropic.PermissionDeniedError),
    (404, anthropic.NotFoundError),
    (429, anthropic.RateLimitError),
    (500, anthropic.InternalServerError),
    (529, anthropic.OverloadedError),
]


@pytest.mark.parametrize(("status", "cls"), STATUS_ERRORS, ids=[c.__name__ for _, c in STATUS_ERRORS])
def test_status_error_recorded_by_class_and_reraised(reg, fake_anthropic, status, cls):
    fake_anthropic.script(Reply(status=status))
    client = fake_anthropic.client(max_retries=0)
    made = []
    original = client._make_status_error_from_response

    def recording(response):
        err = original(response)
        made.append(err)
        return err

    # The SDK builds the typed error with this method: remember the object it raised.
    client._make_status_error_from_response = recording
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(**kw())

    err = info.value
    assert type(err) is cls
    assert err.status_code == status
    assert len(made) == 1
    assert err is made[0]
    assert sdk_frames(err)  # raised from the SDK's own code, traceback intact
    assert requests(reg) == (0, 1)
    assert errors(reg, cls.__name__) == 1
    assert duration(reg)[0] == 1
    assert rate_limited(reg) == (1 if status == 429 else 0)
    assert executions(reg) == (0, 1)
    assert val(reg, "claude_requests_in_flight", agent="default") == 0


def test_error_code_subclass_is_the_label(reg, fake_anthropic):
    fake_anthropic.script(Reply(status=429, error_code="enforced_spend_limit_reached"))
    with pytest.raises(anthropic.RateLimitError) as info:
        fake_anthropic.client(max_retries=0).messages.create(**kw())
    name = type(info.value).__name__
    assert name == "EnforcedSpendLimitReachedError"
    code = {"error_code": "enforced_spend_limit_reached"}
    assert val(reg, "claude_errors_total", agent="default", model=MODEL, error_type=name, **code) == 1
    assert errors(reg, name) == 0  # error_code="none": the code is not dropped
    assert errors(reg, "RateLimitError") == 0
    assert val(reg, "claude_rate_limited_total", agent="default", model=MODEL, **code) == 1
    assert rate_limited(reg) == 0


class Capture(anthropic.Middleware):
    """A user's own middleware: it sees what the transport raised inside the SDK's retry loop."""

    def __init__(self) -> None:
        self.raised: list[BaseException] = []

    def handle(self, request, call_next):
        try:
            return call_next(request)
        except BaseException as exc:
            self.raised.append(exc)
            raise


def test_connection_error_is_the_same_object(reg, fake_anthropic):
    fake_anthropic.script(Reply(drop_connection=True))
    capture = Capture()
    client = fake_anthropic.client(max_retries=0, middleware=[capture])
    with pytest.raises(anthropic.APIConnectionError) as info:
        client.messages.create(**kw())

    err = info.value
    assert type(err) is anthropic.APIConnectionError
    assert capture.raised == [err]
    assert capture.raised[0] is err
    assert sdk_frames(err)
    assert requests(reg) == (0, 1)
    assert errors(reg, "APIConnectionError") == 1


def test_timeout_error_is_the_same_object(reg, fake_anthropic):
    fake_anthropic.script(Reply(latency=1.0))
    capture = Capture()
    client = fake_anthropic.client(max_retries=0, timeout=0.1, middleware=[capture])
    with pytest.raises(anthropic.APITimeoutError) as info:
        client.messages.create(**kw())

    err = info.value
    assert type(err) is anthropic.APITimeoutError
    assert capture.raised[0] is err
    assert sdk_frames(err)
    assert requests(reg) == (0, 1)
    assert errors(reg, "APITimeoutError") == 1
    assert errors(reg, "APIConnectionError") == 0
    count, seconds = duration(reg)
    assert count == 1
    assert seconds >= 0.1


def test_connection_error_after_retries_is_the_last_attempts(reg, fake_anthropic, fast_backoff):
    fake_anthropic.script(*(Reply(drop_connection=True) for _ in range(3)))
    capture = Capture()
    client = fake_anthropic.client(max_retries=2, middleware=[capture])
    with pytest.raises(anthropic.APIConnectionError) as info:
        client.messages.create(**kw())
    assert len(capture.raised) == 3
    assert capture.raised[-1] is info.value
    assert retries(reg, "connection") == 2
    assert requests(reg) == (0, 1)
    assert errors(reg, "APIConnectionError") == 1


def test_error_inside_execution_is_recorded_under_its_agent(reg, fake_anthropic):
    fake_anthropic.script(Reply(status=400))
    client = fake_anthropic.client(max_retries=0)
    with ce.execution("job", agent="erring"), pytest.raises(anthropic.BadRequestError):
        client.messages.create(**kw())
    assert requests(reg, agent="erring") == (0, 1)
    assert errors(reg, "BadRequestError", agent="erring") == 1
    # The caller handled the error: the execution itself succeeded.
    assert executions(reg, "erring", "job") == (1, 0)


def test_retry_of_a_stream_request_with_ratelimit_headers_on_the_429(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(status=429, retry_after=0.01, ratelimit={"tokens": (1000, 0, "2030-01-01T00:00:00Z")}),
        Reply(),
    )
    with fake_anthropic.client(max_retries=1).messages.stream(**kw()) as stream:
        stream.until_done()
    assert rate_limited(reg) == 1
    assert retries(reg, "429") == 1
    # The 429 carried the headers, the 200 none: the last known values are the 429's.
    assert reg.get_sample_value("claude_ratelimit_remaining", {"model": MODEL, "resource": "tokens"}) == 0
    assert reg.get_sample_value("claude_ratelimit_limit", {"model": MODEL, "resource": "tokens"}) == 1000
