"""Cost from every billed field, the error taxonomy, rate limits per model, cache misses and refusals:
the real SDK over HTTP to the fake API, read back from the registry.

Expected costs are worked out by hand (figures from pricing.yaml, USD per million tokens).
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import anthropic
import claude_exporter as ce
import pytest
from claude_exporter.instrumentation.extract import CACHE_MISS_REASONS, ERROR_CODES, REFUSAL_CATEGORIES
from claude_exporter.rules.recording import SPEND_LIMIT_CODES
from claude_exporter.testing import Reply
from conftest import MODEL, kw, val
from prometheus_client import CollectorRegistry


def cost(reg: Any, model: str) -> float:
    return val(reg, "claude_cost_usd_total", agent="default", model=model)


def unpriced(reg: Any, model: str, reason: str) -> float:
    return val(reg, "claude_exporter_unpriced_tokens_total", model=model, reason=reason)


# --------------------------------------------------------------------------------------------- cost


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True])
def test_fast_geo_and_cache_are_priced_from_the_response(reg: Any, fake_anthropic: Any, stream: bool) -> None:
    # claude-opus-4-8 fast ($10 / $50, cache 12.50 / 20 / 1), US inference x1.1:
    #   1000 in x 10 + 2000 out x 50 + 4000 5m x 12.5 + 1000 1h x 20 + 10,000 reads x 1 = 190,000
    #   x 1.1 = 209,000 per M -> $0.209
    fake_anthropic.script(
        Reply(
            input_tokens=1000,
            output_tokens=2000,
            cache_creation_input_tokens=5000,
            cache_creation_5m=4000,
            cache_creation_1h=1000,
            cache_read_input_tokens=10_000,
            usage_extra={"speed": "fast", "inference_geo": "us"},
        )
    )
    client = fake_anthropic.client(max_retries=0)
    if stream:
        with client.messages.stream(**kw("claude-opus-4-8")) as s:
            s.get_final_message()
    else:
        client.messages.create(**kw("claude-opus-4-8"))
    assert cost(reg, "claude-opus-4-8") == pytest.approx(0.209, rel=1e-9)
    # the 10,000 reads at $1 instead of $10, x1.1: 99,000 per M
    saved = val(reg, "claude_cache_savings_usd_total", agent="default", model="claude-opus-4-8")
    assert saved == pytest.approx(0.099, rel=1e-9)


@pytest.mark.integration
def test_web_search_fee_and_batch_tier(reg: Any, fake_anthropic: Any) -> None:
    # claude-haiku-4-5 on the batch tier: (1000 x 1 + 100 x 5) x 0.5 = 750 per M = $0.00075;
    # 3 web searches x $0.01 = $0.03 (not discounted) -> $0.03075
    fake_anthropic.script(
        Reply(
            input_tokens=1000,
            output_tokens=100,
            service_tier="batch",
            usage_extra={"server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 1}},
        )
    )
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert cost(reg, MODEL) == pytest.approx(0.03075, rel=1e-9)


@pytest.mark.integration
def test_iterations_with_compaction_and_a_fallback_model(reg: Any, fake_anthropic: Any) -> None:
    # A beta request on claude-fable-5: a compaction (fable-5), a declined message (fable-5), then served
    # by claude-opus-5 (fallback_message). Top level: the non-compaction iterations only.
    #   compaction: 180,000 in x 10 + 3500 out x 50 = 1,800,000 + 175,000 = 1,975,000
    #   message:    5000 in x 10 + 20,000 reads x 1 + 100 out x 50 = 75,000
    #   fallback:   5000 in x 5 + 20,000 5m x 6.25 + 800 out x 25 = 170,000
    #   -> 2,220,000 per M = $2.22
    iterations = [
        {"type": "compaction", "input_tokens": 180_000, "output_tokens": 3500,
         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        {"type": "message", "model": "claude-fable-5", "input_tokens": 5000, "output_tokens": 100,
         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 20_000},
        {"type": "fallback_message", "model": "claude-opus-5", "input_tokens": 5000, "output_tokens": 800,
         "cache_creation_input_tokens": 20_000, "cache_read_input_tokens": 0},
    ]  # fmt: skip
    fake_anthropic.script(
        Reply(
            input_tokens=10_000,
            output_tokens=900,
            cache_creation_input_tokens=20_000,
            cache_read_input_tokens=20_000,
            usage_extra={"iterations": iterations},
        )
    )
    fake_anthropic.client(max_retries=0).beta.messages.create(**kw("claude-fable-5"))
    assert cost(reg, "claude-fable-5") == pytest.approx(2.22, rel=1e-9)
    # tokens as billed: the sum of the iterations, compaction included
    got = {
        t: val(reg, "claude_tokens_total", agent="default", model="claude-fable-5", type=t)
        for t in ("input", "output", "cache_creation", "cache_read")
    }
    assert got == {"input": 190_000, "output": 4400, "cache_creation": 20_000, "cache_read": 20_000}


@pytest.mark.integration
def test_fast_mode_on_a_model_without_fast_rates_is_counted_unpriced(reg: Any, fake_anthropic: Any) -> None:
    fake_anthropic.script(Reply(input_tokens=100, output_tokens=20, usage_extra={"speed": "fast"}))
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert cost(reg, MODEL) == 0
    assert unpriced(reg, MODEL, "speed") == 120


@pytest.mark.integration
def test_a_vertex_client_is_unpriced_with_its_platform_named(reg: Any, fake_anthropic: Any) -> None:
    fake_anthropic.script(Reply(input_tokens=100, output_tokens=20))
    client = anthropic.AnthropicVertex(
        region="us-east5", project_id="p", access_token="t", base_url=fake_anthropic.url, max_retries=0
    )
    client.messages.create(**kw("claude-sonnet-4-6@default"))
    assert fake_anthropic.requests[-1].path.endswith("/models/claude-sonnet-4-6@default:rawPredict")
    assert cost(reg, "claude-sonnet-4-6@default") == 0
    assert unpriced(reg, "claude-sonnet-4-6@default", "platform") == 120


@pytest.mark.integration
def test_the_same_model_name_first_party_is_priced(reg: Any, fake_anthropic: Any) -> None:
    fake_anthropic.script(Reply(input_tokens=1000, output_tokens=1000))
    fake_anthropic.client(max_retries=0).messages.create(**kw("claude-sonnet-4-6"))
    # 1000 x 3 + 1000 x 15 = 18,000 per M
    assert cost(reg, "claude-sonnet-4-6") == pytest.approx(0.018, rel=1e-9)


# -------------------------------------------------------------------------------------- error codes


# Every (status, error_code) pair the installed SDK maps to an error class of its own (which pairs exist is a
# fact of its release: 2.17 knows image_dimensions_too_large, 2.10 does not), and two it cannot know.
SDK_ERROR_CLASSES = importlib.import_module("anthropic._error_classes").ERROR_CLASSES
ERROR_CASES = [
    *sorted((status, code, cls.__name__) for (status, code), cls in SDK_ERROR_CLASSES.items() if code),
    (429, "a_code_from_the_future", "RateLimitError"),
    (429, None, "RateLimitError"),
]


@pytest.mark.integration
def test_errors_carry_their_bounded_error_code(fresh: None, fake_anthropic: Any) -> None:
    # One client for every case (a test per case cost 0.1 s each, 14 s for the 140 pairs of SDK 2.17), a
    # fresh registry for each (the open labels' cap folds values beyond it; the caps have tests of their own).
    client = fake_anthropic.client(max_retries=0)
    for status, code, error_type in ERROR_CASES:
        case = (status, code, error_type)
        ce.uninstrument()
        reg = CollectorRegistry()
        ce.instrument(registry=reg)
        fake_anthropic.script(Reply(status=status, error_code=code))
        with pytest.raises(anthropic.APIStatusError) as info:
            client.messages.create(**kw())
        assert type(info.value).__name__ == error_type, case  # the SDK's own class for (status, error_code)
        label = "none" if code is None else code if code in ERROR_CODES else "__other__"
        series = {"agent": "default", "model": MODEL, "error_type": error_type, "error_code": label}
        assert val(reg, "claude_errors_total", **series) == 1, case


@pytest.mark.integration
def test_retried_429s_and_529s_are_counted_per_attempt_with_their_code(reg: Any, fake_anthropic: Any) -> None:
    fake_anthropic.script(
        Reply(status=429, error_code="ramp_limit_exceeded", retry_after=0.01),
        Reply(status=529, error_code="compaction_unavailable", retry_after=0.01),
        Reply(),
    )
    fake_anthropic.client(max_retries=2).messages.create(**kw())
    base = {"agent": "default", "model": MODEL}
    assert val(reg, "claude_rate_limited_total", **base, error_code="ramp_limit_exceeded") == 1
    assert val(reg, "claude_rate_limited_total", **base, error_code="none") == 0
    assert val(reg, "claude_retries_total", **base, reason="429", error_code="ramp_limit_exceeded") == 1
    assert val(reg, "claude_retries_total", **base, reason="529", error_code="compaction_unavailable") == 1
    assert val(reg, "claude_requests_total", **base, outcome="success") == 1


@pytest.mark.integration
def test_async_429_code_per_attempt(reg: Any, fake_anthropic: Any) -> None:
    fake_anthropic.script(
        Reply(status=429, error_code="enforced_spend_limit_reached", retry_after=0.01), Reply()
    )
    asyncio.run(fake_anthropic.async_client(max_retries=1).messages.create(**kw()))
    base = {"agent": "default", "model": MODEL}
    assert val(reg, "claude_rate_limited_total", **base, error_code="enforced_spend_limit_reached") == 1


@pytest.mark.unit
def test_the_sdk_knows_the_codes_the_alerts_name() -> None:
    # The spend-limit codes ClaudeSpendLimitReached pages on: each a code of the installed SDK's ErrorDetails
    # (so the exporter keeps it as a label value) with an error class of its own for some status.
    assert len(SPEND_LIMIT_CODES) >= 4
    for code in SPEND_LIMIT_CODES:
        assert code in ERROR_CODES
        assert any(known == code for _, known in SDK_ERROR_CLASSES), code
    # The parametrized test above covers every class the SDK maps, the spend limits among them.
    assert {code for _, code, _ in ERROR_CASES} >= set(SPEND_LIMIT_CODES)


# ---------------------------------------------------------------------------------- rate limits


@pytest.mark.integration
def test_rate_limit_gauges_are_per_model(reg: Any, fake_anthropic: Any) -> None:
    fake_anthropic.script(
        Reply(ratelimit={"tokens": (1000, 900, "2030-01-01T00:00:00Z")}),
        Reply(ratelimit={"tokens": (5000, 100, "2030-01-01T00:00:00Z")}),
    )
    client = fake_anthropic.client(max_retries=0)
    client.messages.create(**kw(MODEL))
    client.messages.create(**kw("claude-opus-4-6"))
    assert val(reg, "claude_ratelimit_remaining", model=MODEL, resource="tokens") == 900
    assert val(reg, "claude_ratelimit_remaining", model="claude-opus-4-6", resource="tokens") == 100
    assert val(reg, "claude_ratelimit_limit", model="claude-opus-4-6", resource="tokens") == 5000


# --------------------------------------------------------------------------- cache misses, refusals


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the SDK's, on the unknown reason
@pytest.mark.parametrize("stream", [False, True])
def test_cache_misses_by_reason(reg: Any, fake_anthropic: Any, stream: bool) -> None:
    miss = {"cache_miss_reason": {"type": "system_changed", "cache_missed_input_tokens": 4096}}
    fake_anthropic.script(
        Reply(diagnostics=miss),
        Reply(diagnostics={"cache_miss_reason": {"type": "brand_new_reason"}}),
        Reply(diagnostics={"cache_miss_reason": None}),  # diagnosis pending: nothing recorded
    )
    client = fake_anthropic.client(max_retries=0)
    for _ in range(3):
        if stream:
            with client.beta.messages.stream(**kw()) as s:
                s.get_final_message()
        else:
            client.beta.messages.create(**kw())
    base = {"agent": "default", "model": MODEL}
    assert val(reg, "claude_cache_misses_total", **base, reason="system_changed") == 1
    assert val(reg, "claude_cache_missed_input_tokens_total", **base, reason="system_changed") == 4096
    assert val(reg, "claude_cache_misses_total", **base, reason="__other__") == 1
    assert "system_changed" in CACHE_MISS_REASONS


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True])
def test_refusals_by_category_beside_stop_reasons(reg: Any, fake_anthropic: Any, stream: bool) -> None:
    fake_anthropic.script(
        Reply(
            stop_reason="refusal", stop_details={"type": "refusal", "category": "cyber", "explanation": "x"}
        ),
        Reply(stop_reason="refusal", stop_details={"type": "refusal", "category": None}),
        Reply(stop_reason="end_turn"),
    )
    client = fake_anthropic.client(max_retries=0)
    for _ in range(3):
        if stream:
            with client.messages.stream(**kw()) as s:
                s.get_final_message()
        else:
            client.messages.create(**kw())
    base = {"agent": "default", "model": MODEL}
    assert val(reg, "claude_refusals_total", **base, category="cyber") == 1
    assert val(reg, "claude_refusals_total", **base, category="none") == 1
    assert val(reg, "claude_stop_reasons_total", **base, stop_reason="refusal") == 2
    assert "cyber" in REFUSAL_CATEGORIES


@pytest.mark.integration
def test_error_code_values_pass_the_label_cap(reg: Any, fake_anthropic: Any) -> None:
    """More distinct known codes than the open-label cap (64): the 65th folds into __overflow__, counted."""
    codes = sorted(ERROR_CODES)[:65]
    fake_anthropic.script(*(Reply(status=400, error_code=code) for code in codes))
    client = fake_anthropic.client(max_retries=0)
    for _ in codes:
        with pytest.raises(anthropic.APIStatusError):
            client.messages.create(**kw())
    assert val(reg, "claude_exporter_label_overflow_total", label="error_code") == 1
    text = "\n".join(
        sample.labels["error_code"]
        for family in reg.collect()
        if family.name == "claude_errors"
        for sample in family.samples
    )
    assert text.count("__overflow__") == 1
    assert len(set(text.split("\n"))) == 65  # 64 codes and the overflow
