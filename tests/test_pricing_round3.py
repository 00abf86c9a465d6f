"""The bill to the cent, round 3 (issue 21): fast mode on the 5.2 models, batch results read through the
SDK, the tier family, the cache-write split carried through a stream, and the model the response names.

Every figure is worked out by hand below from pricing.yaml (USD per million tokens), then checked through
a real SDK request to the fake API and read back from the registry.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import anthropic
import pytest
from claude_exporter.recording.pricing import load_price_table
from claude_exporter.recording.usage import Usage
from claude_exporter.testing import Reply
from conftest import kw, val
from hypothesis import given, settings
from hypothesis import strategies as st


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-12, abs=1e-15)


def cost(reg: Any, model: str, agent: str = "default") -> float:
    return val(reg, "claude_cost_usd_total", agent=agent, model=model)


def tier_cost(reg: Any, model: str, tier: str, agent: str = "default") -> float:
    return val(reg, "claude_cost_by_tier_usd_total", agent=agent, model=model, tier=tier)


def token(reg: Any, model: str, kind: str) -> float:
    return val(reg, "claude_tokens_total", agent="default", model=model, type=kind)


def unpriced(reg: Any, model: str, reason: str) -> float:
    return val(reg, "claude_exporter_unpriced_tokens_total", model=model, reason=reason)


# ------------------------------------------------------------------------------ fast mode on the 5.2s


@pytest.mark.integration
@pytest.mark.parametrize("model", ["claude-fable-5-2", "claude-mythos-5-2"])
@pytest.mark.parametrize("stream", [False, True])
def test_fast_mode_on_the_5_2_models_is_priced(
    reg: Any, fake_anthropic: Any, model: str, stream: bool
) -> None:
    # Fable 5.2 / Mythos 5.2 fast: $16 in / $80 out (2x $8 / $40); the model's own cache ratios on the
    # fast input rate: 5m 10/8 x 16 = 20, 1h 16/8 x 16 = 32, reads 0.20/8 x 16 = 0.40.
    #   1000 x 16 + 2000 x 80 + 4000 x 20 + 1000 x 32 + 10,000 x 0.40
    #   = 16,000 + 160,000 + 80,000 + 32,000 + 4000 = 292,000 per M -> $0.292
    fake_anthropic.script(
        Reply(
            input_tokens=1000,
            output_tokens=2000,
            cache_creation_input_tokens=5000,
            cache_creation_5m=4000,
            cache_creation_1h=1000,
            cache_read_input_tokens=10_000,
            usage_extra={"speed": "fast"},
        )
    )
    client = fake_anthropic.client(max_retries=0)
    if stream:
        with client.messages.stream(**kw(model)) as s:
            s.get_final_message()
    else:
        client.messages.create(**kw(model))
    assert cost(reg, model) == approx(0.292)
    assert unpriced(reg, model, "speed") == 0


@pytest.mark.integration
def test_fast_us_geo_and_priority_stack_on_fable_5_2(reg: Any, fake_anthropic: Any) -> None:
    # Fable 5.2 fast, US inference x1.1, priority tier (list rates, x1):
    #   1000 x 16 + 1000 x 80 = 96,000; x 1.1 = 105,600 per M -> $0.1056, all of it on the priority tier
    fake_anthropic.script(
        Reply(
            input_tokens=1000,
            output_tokens=1000,
            service_tier="priority",
            usage_extra={"speed": "fast", "inference_geo": "us"},
        )
    )
    fake_anthropic.client(max_retries=0).messages.create(**kw("claude-fable-5-2"))
    assert cost(reg, "claude-fable-5-2") == approx(0.1056)
    assert tier_cost(reg, "claude-fable-5-2", "priority") == approx(0.1056)


@pytest.mark.unit
def test_figures_without_an_official_source_are_marked_estimates() -> None:
    table = load_price_table()
    for model in ("claude-fable-5-2", "claude-mythos-5-2"):
        estimated = table.price(model).estimated
        assert {"cache_write_5m", "cache_write_1h", "cache_read", "fast.input", "fast.output"} <= estimated
        assert "input" not in estimated and "output" not in estimated
    assert {"input", "output", "cache_write_5m", "cache_write_1h", "cache_read"} <= table.price(
        "claude-mythos-preview"
    ).estimated
    # The price list's own rows are not estimates.
    assert table.price("claude-opus-5-5").estimated == frozenset()


# ------------------------------------------------------------------------------- the tier family


@pytest.mark.integration
def test_cost_by_tier_keeps_standard_priority_and_batch_apart(reg: Any, fake_anthropic: Any) -> None:
    # claude-sonnet-4-6 ($3 / $15):
    #   standard: 10,000 x 3 + 1000 x 15 = 45,000 -> $0.045
    #   priority: the same tokens at list rates -> $0.045
    #   batch:    the same tokens x 0.5 -> $0.0225
    client = fake_anthropic.client(max_retries=0)
    for tier in ("standard", "priority", "batch"):
        fake_anthropic.script(Reply(input_tokens=10_000, output_tokens=1000, service_tier=tier))
        client.messages.create(**kw("claude-sonnet-4-6"))
    model = "claude-sonnet-4-6"
    assert tier_cost(reg, model, "standard") == approx(0.045)
    assert tier_cost(reg, model, "priority") == approx(0.045)
    assert tier_cost(reg, model, "batch") == approx(0.0225)
    # The total stays the sum of the tiers.
    assert cost(reg, model) == approx(0.1125)


@pytest.mark.integration
def test_a_tier_the_price_list_does_not_name_is_one_bounded_value(reg: Any, fake_anthropic: Any) -> None:
    client = fake_anthropic.client(max_retries=0)
    for tier in ("a-new-tier", "another-one"):
        fake_anthropic.script(Reply(input_tokens=1000, output_tokens=0, service_tier=tier))
        client.messages.create(**kw("claude-haiku-4-5"))
    # 2 x 1000 x $1 = $0.002, under one bounded value
    assert tier_cost(reg, "claude-haiku-4-5", "__other__") == approx(0.002)
    assert tier_cost(reg, "claude-haiku-4-5", "a-new-tier") == 0


# ------------------------------------------------------------------- the cache-write split in a stream


@pytest.mark.integration
@pytest.mark.parametrize(
    ("start_split", "expected"),
    [
        # message_start: 600 written, all 1-hour; message_delta: 1000 written, no split.
        #   100 in x 5 + 50 out x 25 + 1000 x 10 (1h) = 500 + 1250 + 10,000 = 11,750 -> $0.01175
        #   (today's rule would price the 400 left over at the 5-minute $6.25: $0.01025)
        ((0, 600), 0.01175),
        # message_start: 200 5-minute and 600 1-hour; message_delta: 1000 written. In the same proportion:
        #   1h = 1000 x 600 / 800 = 750, 5m = 250:
        #   500 + 1250 + 250 x 6.25 + 750 x 10 = 10,812.5 -> $0.0108125
        ((200, 600), 0.0108125),
    ],
)
def test_a_stream_carries_the_cache_write_split_from_message_start(
    reg: Any, fake_anthropic: Any, start_split: tuple[int, int], expected: float
) -> None:
    five, hour = start_split
    fake_anthropic.script(
        Reply(
            input_tokens=100,
            output_tokens=50,
            cache_creation_input_tokens=1000,
            start_usage={
                "cache_creation_input_tokens": five + hour,
                "cache_creation": {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour},
            },
        )
    )
    with fake_anthropic.client(max_retries=0).messages.stream(**kw("claude-opus-4-6")) as s:
        s.get_final_message()
    assert cost(reg, "claude-opus-4-6") == approx(expected)
    assert token(reg, "claude-opus-4-6", "cache_creation") == 1000


@pytest.mark.unit
@settings(max_examples=60, deadline=None)
@given(
    five=st.integers(0, 10**6),
    hour=st.integers(0, 10**6),
    total=st.integers(0, 10**7),
)
def test_a_later_total_keeps_the_split_in_proportion(five: int, hour: int, total: int) -> None:
    # message_start's usage: a total and its split; message_delta's: the cumulative total alone.
    start = SimpleNamespace(
        input_tokens=1,
        output_tokens=1,
        cache_creation_input_tokens=five + hour,
        cache_creation=SimpleNamespace(ephemeral_5m_input_tokens=five, ephemeral_1h_input_tokens=hour),
    )
    delta = SimpleNamespace(output_tokens=2, cache_creation_input_tokens=total)
    usage = Usage()
    usage.update(start)
    usage.update(delta)
    assert usage.cache_creation == total
    if five + hour == 0:
        assert (usage.cache_5m, usage.cache_1h) == (0, 0)  # no split to carry: the default rule prices it
        return
    assert usage.cache_5m is not None and usage.cache_1h is not None
    assert usage.cache_5m + usage.cache_1h == total  # every write in the split, none invented
    if total == five + hour:
        assert (usage.cache_5m, usage.cache_1h) == (five, hour)  # unchanged
    # The 1-hour share is the start's, rounded down by less than one token.
    assert 0 <= total * hour - usage.cache_1h * (five + hour) < five + hour


# ---------------------------------------------------------------------- the model the response names


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True])
def test_cost_follows_the_model_the_response_names(reg: Any, fake_anthropic: Any, stream: bool) -> None:
    # Asked for claude-fable-5 ($10 / $50), served by claude-opus-4-8 ($5 / $25), as a fallback is:
    #   1000 x 5 + 1000 x 25 = 30,000 per M -> $0.03 (not Fable's $0.06); the label stays the request's.
    fake_anthropic.script(Reply(input_tokens=1000, output_tokens=1000, model="claude-opus-4-8"))
    client = fake_anthropic.client(max_retries=0)
    if stream:
        with client.messages.stream(**kw("claude-fable-5")) as s:
            s.get_final_message()
    else:
        client.messages.create(**kw("claude-fable-5"))
    assert cost(reg, "claude-fable-5") == approx(0.03)
    assert cost(reg, "claude-opus-4-8") == 0


@pytest.mark.integration
def test_an_unpriced_alias_is_priced_by_the_model_the_response_names(reg: Any, fake_anthropic: Any) -> None:
    # An alias the table does not know, answered by claude-haiku-4-5: 1000 x 1 + 200 x 5 = 2000 -> $0.002
    fake_anthropic.script(Reply(input_tokens=1000, output_tokens=200, model="claude-haiku-4-5-20251001"))
    fake_anthropic.client(max_retries=0).messages.create(**kw("claude-haiku-latest-alias"))
    assert cost(reg, "claude-haiku-latest-alias") == approx(0.002)
    assert unpriced(reg, "claude-haiku-latest-alias", "model") == 0


@pytest.mark.integration
def test_a_response_model_the_table_lacks_keeps_the_requested_price(reg: Any, fake_anthropic: Any) -> None:
    # claude-haiku-4-5 asked, a name the table cannot resolve answered: priced as asked, 1000 x 1 -> $0.001
    fake_anthropic.script(Reply(input_tokens=1000, output_tokens=0, model="some-internal-name"))
    fake_anthropic.client(max_retries=0).messages.create(**kw("claude-haiku-4-5"))
    assert cost(reg, "claude-haiku-4-5") == approx(0.001)


# -------------------------------------------------------------------------- batch results via the SDK

# Three results: claude-haiku-4-5 1000 in / 100 out; claude-opus-4-6 2000 in / 400 out / 1000 1-hour
# writes / 10,000 reads; one errored (nothing billed).
#   haiku: (1000 x 1 + 100 x 5) x 0.5 = 750 per M -> $0.00075
#   opus:  (2000 x 5 + 400 x 25 + 1000 x 10 + 10,000 x 0.5) x 0.5 = 35,000 x 0.5 = 17,500 -> $0.0175
BATCH = {
    "req-1": Reply(input_tokens=1000, output_tokens=100, model="claude-haiku-4-5", service_tier="batch"),
    "req-2": Reply(
        input_tokens=2000,
        output_tokens=400,
        cache_creation_input_tokens=1000,
        cache_creation_1h=1000,
        cache_read_input_tokens=10_000,
        model="claude-opus-4-6",
        service_tier="batch",
    ),
    "req-3": "errored",
}


def _check_batch(reg: Any) -> None:
    assert cost(reg, "claude-haiku-4-5") == approx(0.00075)
    assert cost(reg, "claude-opus-4-6") == approx(0.0175)
    assert tier_cost(reg, "claude-haiku-4-5", "batch") == approx(0.00075)
    assert tier_cost(reg, "claude-opus-4-6", "batch") == approx(0.0175)
    assert (token(reg, "claude-haiku-4-5", "input"), token(reg, "claude-haiku-4-5", "output")) == (1000, 100)
    assert token(reg, "claude-opus-4-6", "cache_creation") == 1000
    assert token(reg, "claude-opus-4-6", "cache_read") == 10_000
    # Reading results is not a Messages request.
    assert (
        val(reg, "claude_requests_total", agent="default", model="claude-haiku-4-5", outcome="success") == 0
    )


@pytest.mark.integration
def test_batch_results_are_priced_at_batch_rates_once(reg: Any, fake_anthropic: Any) -> None:
    batch_id = fake_anthropic.add_batch(BATCH)
    client = fake_anthropic.client(max_retries=0)
    first = list(client.messages.batches.results(batch_id))
    # The caller gets the SDK's very objects.
    assert [type(r) for r in first] == [anthropic.types.messages.MessageBatchIndividualResponse] * 3
    assert [r.result.type for r in first] == ["succeeded", "succeeded", "errored"]
    _check_batch(reg)
    # Read again (and through the beta resource): counted once.
    assert len(list(client.messages.batches.results(batch_id))) == 3
    assert len(list(client.beta.messages.batches.results(batch_id))) == 3
    _check_batch(reg)


@pytest.mark.integration
def test_async_batch_results_are_priced_at_batch_rates_once(reg: Any, fake_anthropic: Any) -> None:
    batch_id = fake_anthropic.add_batch(BATCH)

    async def read_twice() -> list[Any]:
        client = fake_anthropic.async_client(max_retries=0)
        try:
            first = [r async for r in await client.messages.batches.results(batch_id)]
            async for _ in await client.messages.batches.results(batch_id):
                pass
            return first
        finally:
            await client.close()

    first = asyncio.run(read_twice())
    assert [r.custom_id for r in first] == ["req-1", "req-2", "req-3"]
    _check_batch(reg)


@pytest.mark.integration
def test_a_batch_result_without_service_tier_is_still_batch(reg: Any, fake_anthropic: Any) -> None:
    # The results endpoint bills at batch rates whatever the usage says: 1000 x 1 x 0.5 -> $0.0005
    batch_id = fake_anthropic.add_batch(
        {"only": Reply(input_tokens=1000, output_tokens=0, model="claude-haiku-4-5", service_tier="standard")}
    )
    list(fake_anthropic.client(max_retries=0).messages.batches.results(batch_id))
    assert tier_cost(reg, "claude-haiku-4-5", "batch") == approx(0.0005)
    assert tier_cost(reg, "claude-haiku-4-5", "standard") == 0


@pytest.mark.integration
def test_results_read_partly_then_again_count_each_result_once(reg: Any, fake_anthropic: Any) -> None:
    batch_id = fake_anthropic.add_batch(BATCH)
    client = fake_anthropic.client(max_retries=0)
    results = client.messages.batches.results(batch_id)
    next(iter(results))  # only the first result
    results.close()
    assert cost(reg, "claude-haiku-4-5") == approx(0.00075) and cost(reg, "claude-opus-4-6") == 0
    list(client.messages.batches.results(batch_id))
    _check_batch(reg)


@pytest.mark.integration
def test_a_hostile_batch_result_is_refused_and_the_others_are_counted(reg: Any, fake_anthropic: Any) -> None:
    batch_id = fake_anthropic.add_batch(
        {
            "bad": Reply(input_tokens=-5, output_tokens=10**13, model="claude-haiku-4-5"),
            "good": Reply(input_tokens=1000, output_tokens=0, model="claude-haiku-4-5"),
        }
    )
    items = list(fake_anthropic.client(max_retries=0).messages.batches.results(batch_id))
    # The caller reads every line as the SDK parsed it, the hostile one included.
    assert [item.custom_id for item in items] == ["bad", "good"]
    assert items[0].result.message.usage.input_tokens == -5
    # Nothing of the hostile line is recorded, the fault is counted, the good line is: 1000 x 1 x 0.5
    assert val(reg, "claude_exporter_internal_errors_total", stage="batch_result") == 1
    assert cost(reg, "claude-haiku-4-5") == approx(0.0005)
    assert token(reg, "claude-haiku-4-5", "input") == 1000


@pytest.mark.integration
def test_raw_batch_results_pass_through_untouched(reg: Any, fake_anthropic: Any) -> None:
    batch_id = fake_anthropic.add_batch(BATCH)
    raw = fake_anthropic.client(max_retries=0).messages.batches.with_raw_response.results(batch_id)
    assert raw.http_response.status_code == 200
    assert len(raw.http_response.read().splitlines()) == 3
    assert val(reg, "claude_exporter_internal_errors_total", stage="batch_results") == 0
    assert cost(reg, "claude-haiku-4-5") == 0  # not read through the decoder: not priced


@pytest.mark.unit
def test_the_memory_of_counted_results_is_bounded() -> None:
    from claude_exporter.instrumentation.batches import SEEN_LIMIT, Seen

    seen = Seen(limit=3)
    assert [seen.first(("b", str(i))) for i in range(3)] == [True] * 3
    assert not seen.first(("b", "0"))
    assert seen.first(("b", "3"))  # the fourth pair forgets the oldest
    assert len(seen) == 3
    assert seen.first(("b", "0"))  # forgotten, so counted again: the documented limit
    assert Seen().limit == SEEN_LIMIT
