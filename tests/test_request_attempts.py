"""What counts as an attempt of a request: other HTTP calls made during a request are not attempts, and a raw
response the SDK rejects still counts, without an internal fault of the shim."""

from __future__ import annotations

import pytest
from conftest import has, kw, requests, val


@pytest.mark.integration
def test_other_http_calls_during_a_request_are_not_attempts(reg, fake_anthropic):
    import httpx2

    side: list[int] = []

    def hook(request):  # a request hook that fetches something of its own, e.g. a gateway token
        with httpx2.Client() as other:
            side.append(other.get(fake_anthropic.url + "/-/nothing-here").status_code)

    client = fake_anthropic.client(max_retries=0, http_client=httpx2.Client(event_hooks={"request": [hook]}))
    client.messages.create(**kw())
    assert side  # the side request was made inside the measured request
    assert requests(reg) == (1, 0)
    assert not has(
        reg, "claude_retries_total", agent="default", model=kw()["model"], reason="unknown", error_code="none"
    )
    assert val(reg, "claude_rate_limited_total", agent="default", model=kw()["model"], error_code="none") == 0


@pytest.mark.unit
def test_a_raw_response_the_sdk_rejects_is_counted_without_a_fault(reg):
    """with_raw_response.create() returns before the body is parsed; when the SDK's parse rejects the body
    (found running the SDK's own suite), the request still counts and the shim reports no internal fault."""
    import anthropic
    import httpx2

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={})

    http = anthropic.DefaultHttpxClient(transport=httpx2.MockTransport(handler))
    client = anthropic.Anthropic(
        api_key="x", http_client=http, max_retries=0, _strict_response_validation=True
    )
    raw = client.messages.with_raw_response.create(**kw())
    with pytest.raises(anthropic.APIResponseValidationError):
        raw.parse()
    assert requests(reg) == (1, 0)
    assert not has(reg, "claude_exporter_internal_errors_total", stage="request_result")
