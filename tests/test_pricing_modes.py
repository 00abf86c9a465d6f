"""Every billed mode of the price list, each with its expected cost worked out by hand.

Figures (USD per million tokens) come from the packaged pricing.yaml, which cites the price list section
and date of each; the comments below repeat the arithmetic so a reader can check it against the list.
"""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Usage
from anthropic.types.beta import BetaUsage
from claude_exporter.recording.pricing import ModelPrice, Priced, PriceTable, load_price_table, price_request
from claude_exporter.recording.usage import Usage as RequestUsage
from conftest import usage_of

pytestmark = pytest.mark.unit


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-12, abs=1e-15)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return load_price_table()


def price(table: PriceTable, model: str) -> ModelPrice:
    found = table.lookup(model)
    assert found is not None, model
    return found


def billed(priced: Priced) -> tuple[float, int, str | None]:
    """What a request is billed and what is left unpriced: (USD, unpriced tokens, why)."""
    return priced.usd, priced.unpriced, priced.reason


def iteration(
    kind: str,
    model: str | None,
    input: int = 0,
    output: int = 0,
    cache_5m: int = 0,
    cache_1h: int = 0,
    cache_read: int = 0,
) -> dict[str, Any]:
    """One entry of ``usage.iterations`` as the API sends it (``model`` absent: the request's own)."""
    entry: dict[str, Any] = {
        "type": kind,
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_5m, "ephemeral_1h_input_tokens": cache_1h},
    }
    if model is not None:
        entry["model"] = model
    return entry


# The fallback credit of a response whose retry was repriced.
REDEEMED = {"status": {"type": "redeemed"}}


def test_every_figure_cites_a_section_and_a_date(table: PriceTable) -> None:
    for model in table.models():
        assert table.cites[model].split("@")[0] in table.sections, model
        p = table.price(model)
        if p.fast_input is not None and "fast.input" not in p.estimated:
            assert table.cites[model + ".fast"].startswith("fast-mode-pricing@")
        if p.long_context_threshold is not None:
            assert model + ".long_context" in table.cites
    for key in ("batch", "priority", "inference_geo", "server_tools.web_search", "server_tools.web_fetch"):
        assert "modifiers." + key in table.cites
    assert all(url.startswith("https://") for url in table.sections.values())


# ----------------------------------------------------------------------------------------- fast mode


def test_fast_mode_prices_the_fast_rates_and_derives_cache_figures(table: PriceTable) -> None:
    # claude-opus-4-8 fast: $10 in / $50 out; caching multipliers on the fast input rate: 12.50 / 20 / 1
    #   1000 x 10 + 2000 x 50 + 4000 x 12.5 + 1000 x 20 + 10,000 x 1 = 190,000 per M -> $0.19
    usage = usage_of(input=1000, output=2000, cache_5m=4000, cache_1h=1000, cache_read=10_000, speed="fast")
    assert price_request(price(table, "claude-opus-4-8"), usage).usd == approx(0.19)
    # the same tokens at standard speed: 5000 + 50,000 + 25,000 + 10,000 + 5000 = 95,000 -> $0.095
    standard = usage_of(input=1000, output=2000, cache_5m=4000, cache_1h=1000, cache_read=10_000)
    assert price_request(price(table, "claude-opus-4-8"), standard).usd == approx(0.095)


def test_fast_mode_keeps_the_models_own_cache_ratio(table: PriceTable) -> None:
    # claude-opus-5-5 reads at 0.05x: fast $8 in -> reads $0.40. 100,000 reads + 1000 output x $40
    #   = 40,000 + 40,000 = 80,000 per M -> $0.08
    usage = usage_of(output=1000, cache_read=100_000, speed="fast")
    assert price_request(price(table, "claude-opus-5-5"), usage).usd == approx(0.08)


@pytest.mark.parametrize("model", ["claude-opus-4-6", "claude-sonnet-4-6", "claude-fable-5-1"])
def test_fast_mode_without_fast_rates_is_unpriced_not_standard(table: PriceTable, model: str) -> None:
    usage = usage_of(input=100, output=20, cache_read=5, speed="fast")
    assert billed(price_request(price(table, model), usage)) == (0.0, 125, "speed")


# ------------------------------------------------------------------------------------ inference geo


def test_us_inference_is_1_1x_on_every_token_category(table: PriceTable) -> None:
    # claude-sonnet-4-6: 10,000 in x 3 + 2000 out x 15 + 5000 5m x 3.75 + 2000 1h x 6 + 50,000 reads x 0.30
    #   = 30,000 + 30,000 + 18,750 + 12,000 + 15,000 = 105,750; x 1.1 = 116,325 per M -> $0.116325
    usage = usage_of(
        input=10_000,
        output=2000,
        cache_5m=5000,
        cache_1h=2000,
        cache_read=50_000,
        geo="us",
    )
    assert price_request(price(table, "claude-sonnet-4-6"), usage).usd == approx(0.116325)
    # "global" is standard pricing: $0.10575
    glob = usage_of(
        input=10_000,
        output=2000,
        cache_5m=5000,
        cache_1h=2000,
        cache_read=50_000,
        geo="global",
    )
    assert price_request(price(table, "claude-sonnet-4-6"), glob).usd == approx(0.10575)


def test_us_inference_on_an_earlier_model_is_standard(table: PriceTable) -> None:
    # claude-haiku-4-5 predates Claude 4.6: 1000 in x 1 + 1000 out x 5 = $0.006, geo or not
    usage = usage_of(input=1000, output=1000, geo="us")
    assert price_request(price(table, "claude-haiku-4-5"), usage).usd == approx(0.006)


def test_an_inference_geo_off_the_price_list_is_unpriced(table: PriceTable) -> None:
    usage = usage_of(input=1000, output=1000, geo="eu")
    assert billed(price_request(price(table, "claude-opus-4-6"), usage)) == (0.0, 2000, "inference_geo")


def test_prompt_length_tier_and_geo_stack(table: PriceTable) -> None:
    # claude-haiku-5-5 over 100,000 prompt tokens: 100,001 x 0.50 + 1000 out x 2.50 = 52,500.5;
    #   x 1.1 = 57,750.55 per M -> $0.05775055
    usage = usage_of(input=100_001, output=1000, geo="us")
    assert price_request(price(table, "claude-haiku-5-5"), usage).usd == approx(0.05775055)


# ------------------------------------------------------------------------------------- service tiers


def test_priority_tier_is_priced_at_list_rates(table: PriceTable) -> None:
    # claude-opus-4-6: 1000 in x 5 + 1000 out x 25 = $0.03
    usage = usage_of(input=1000, output=1000, service_tier="priority")
    assert price_request(price(table, "claude-opus-4-6"), usage).usd == approx(0.03)


def test_batch_tier_from_service_tier_alone(table: PriceTable) -> None:
    # claude-opus-4-6 on the Batch API: $0.03 x 50% = $0.015
    usage = usage_of(input=1000, output=1000, service_tier="batch")
    assert price_request(price(table, "claude-opus-4-6"), usage).usd == approx(0.015)


def test_geo_cache_and_batch_stack(table: PriceTable) -> None:
    # claude-sonnet-4-6, the tokens of the geo test: 105,750 x 1.1 x 0.5 = 58,162.5 per M -> $0.0581625
    usage = usage_of(
        input=10_000,
        output=2000,
        cache_5m=5000,
        cache_1h=2000,
        cache_read=50_000,
        geo="us",
        service_tier="batch",
    )
    assert price_request(price(table, "claude-sonnet-4-6"), usage).usd == approx(0.0581625)


def test_fast_geo_cache_and_batch_stack(table: PriceTable) -> None:
    # The price list offers no fast batch; if a response ever reports both, every stated rule applies:
    # claude-opus-5-5 fast: 2000 in x 8 + 1000 out x 40 + 1000 5m x 10 + 20,000 reads x 0.40
    #   = 16,000 + 40,000 + 10,000 + 8000 = 74,000; x 1.1 (us) x 0.5 (batch) = 40,700 per M -> $0.0407
    usage = usage_of(
        input=2000,
        output=1000,
        cache_5m=1000,
        cache_read=20_000,
        speed="fast",
        geo="us",
        service_tier="batch",
    )
    assert price_request(price(table, "claude-opus-5-5"), usage).usd == approx(0.0407)


# -------------------------------------------------------------------------------------- server tools


def test_web_search_is_10_dollars_per_1000_and_web_fetch_is_free(table: PriceTable) -> None:
    # claude-haiku-4-5: 1000 in x 1 + 100 out x 5 = 1500 per M = $0.0015; 3 searches x $0.01 = $0.03
    usage = usage_of(input=1000, output=100, web_search=3, web_fetch=2)
    assert billed(price_request(price(table, "claude-haiku-4-5"), usage)) == (approx(0.0315), 0, None)
    # batch halves the tokens, not the search fee: 0.00075 + 0.03 = $0.03075
    batch = usage_of(input=1000, output=100, web_search=3, service_tier="batch")
    assert price_request(price(table, "claude-haiku-4-5"), batch).usd == approx(0.03075)


# -------------------------------------------------------------------------------------- iterations


def test_compaction_iterations_are_billed_beside_the_top_level_totals(table: PriceTable) -> None:
    # claude-sonnet-4-6 with compaction: the top level (23,000 / 1000) leaves the compaction out.
    # sum of iterations: (180,000 + 23,000) in x 3 + (3500 + 1000) out x 15 = 609,000 + 67,500
    #   = 676,500 per M -> $0.6765 (the top level alone would say $0.084)
    usage = usage_of(
        input=23_000,
        output=1000,
        iterations=[
            iteration("compaction", None, input=180_000, output=3500),
            iteration("message", None, input=23_000, output=1000),
        ],
    )
    got = price_request(price(table, "claude-sonnet-4-6"), usage, table.lookup)
    assert billed(got) == (approx(0.6765), 0, None)


def test_iterations_with_a_fallback_model_are_priced_per_model(table: PriceTable) -> None:
    # A request on claude-fable-5 declined, then served by claude-opus-5 (server-side fallback):
    #   fable-5 message: 5000 in x 10 + 20,000 reads x 1 + 100 out x 50 = 50,000 + 20,000 + 5000 = 75,000
    #   opus-5 fallback_message: 5000 in x 5 + 20,000 5m writes x 6.25 + 800 out x 25
    #                             = 25,000 + 125,000 + 20,000 = 170,000
    #   total 245,000 per M -> $0.245
    iterations = [
        iteration("message", "claude-fable-5", input=5000, output=100, cache_read=20_000),
        iteration("fallback_message", "claude-opus-5", input=5000, output=800, cache_5m=20_000),
    ]
    usage = usage_of(input=10_000, output=900, iterations=iterations)
    got = price_request(price(table, "claude-fable-5"), usage, table.lookup)
    assert billed(got) == (approx(0.245), 0, None)
    # With the fallback credit redeemed the retry's cache writes bill as reads ($0.50 on opus-5):
    #   opus-5: 25,000 + 20,000 x 0.5 + 20,000 = 55,000; fable-5 unchanged 75,000 -> $0.13
    redeemed = usage_of(input=10_000, output=900, iterations=iterations, fallback=REDEEMED)
    got = price_request(price(table, "claude-fable-5"), redeemed, table.lookup)
    assert billed(got) == (approx(0.13), 0, None)


def test_fast_applies_only_to_iterations_on_the_requests_own_model(table: PriceTable) -> None:
    # claude-opus-4-8 fast with an advisor on claude-fable-5 (standard speed):
    #   own message: 1000 in x 10 + 100 out x 50 = 15,000; advisor: 2000 x 10 + 200 x 50 = 30,000
    #   -> 45,000 per M -> $0.045
    usage = usage_of(
        speed="fast",
        iterations=[
            iteration("message", None, input=1000, output=100),
            iteration("advisor_message", "claude-fable-5", input=2000, output=200),
        ],
    )
    got = price_request(price(table, "claude-opus-4-8"), usage, table.lookup)
    assert billed(got) == (approx(0.045), 0, None)


def test_an_iteration_on_an_unpriced_model_is_counted_not_guessed(table: PriceTable) -> None:
    # the own iteration: claude-haiku-4-5 1000 in x 1 = $0.001; the advisor's 700 tokens are unpriced
    usage = usage_of(
        iterations=[
            iteration("message", None, input=1000),
            iteration("advisor_message", "claude-unknown-9", input=500, output=200),
        ]
    )
    got = price_request(price(table, "claude-haiku-4-5"), usage, table.lookup)
    assert billed(got) == (approx(0.001), 700, "model")


# --------------------------------------------------------------------------------------- platforms
# The recorder prices a client of a platform the table does not name by the table, and names the platform
# as the reason for the unpriced tokens of one it does (tests/test_cost_and_errors.py, on Vertex).


@pytest.mark.parametrize(("platform", "priced"), [("anthropic", True), ("foundry", True), ("aws", True)])
def test_first_party_rated_platforms_are_priced(table: PriceTable, platform: str, priced: bool) -> None:
    found = table.lookup("claude-sonnet-4-5")
    assert (found is not None, platform not in table.modifiers.unpriced_platforms) == (True, priced)


@pytest.mark.parametrize("platform", ["bedrock", "vertex"])
def test_partner_platforms_are_unpriced_with_their_platform_named(table: PriceTable, platform: str) -> None:
    # unpriced for the platform, though the table knows the model by either name
    assert platform in table.modifiers.unpriced_platforms
    assert table.lookup("claude-sonnet-4-5") is not None
    assert table.lookup("anthropic.claude-sonnet-4-5-20250929-v1:0") is not None


def test_unknown_model_reason(table: PriceTable) -> None:
    # Not in the table: every token unpriced, the reason left to the caller (the recorder says "model").
    assert table.lookup("claude-opus-9") is None
    assert billed(price_request(None, usage_of(input=10, output=5, cache_read=3))) == (0.0, 18, None)


# ------------------------------------------------------------------------------ from the SDK's types


def test_every_billed_field_of_a_beta_usage_is_read(table: PriceTable) -> None:
    usage = BetaUsage.model_validate(
        {
            "input_tokens": 10_000,
            "output_tokens": 900,
            "speed": "standard",
            "inference_geo": "us",
            "service_tier": "standard",
            "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1},
            "iterations": [
                {
                    "type": "message",
                    "model": "claude-fable-5",
                    "input_tokens": 5000,
                    "output_tokens": 100,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 20_000,
                },
                {
                    "type": "fallback_message",
                    "model": "claude-opus-5",
                    "input_tokens": 5000,
                    "output_tokens": 800,
                    "cache_creation_input_tokens": 20_000,
                    "cache_read_input_tokens": 0,
                    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 20_000},
                },
            ],
            "fallback_credit": {"status": {"type": "not_applied", "reason": "expired"}},
        }
    )
    recorded = RequestUsage()
    recorded.update(usage)
    assert (recorded.speed, recorded.geo, recorded.service_tier) == ("standard", "us", "standard")
    assert (recorded.web_search, recorded.web_fetch) == (2, 1)
    got = price_request(price(table, "claude-fable-5"), recorded, table.lookup)
    # the request's counts become the sums of its iterations (5m, 1h writes as each iteration splits them)
    assert (recorded.input, recorded.output, recorded.cache_read) == (10_000, 900, 20_000)
    assert (recorded.cache_creation, recorded.cache_5m, recorded.cache_1h) == (20_000, 0, 20_000)
    # fable-5: 75,000 (as above); opus-5: 25,000 + 20,000 1h writes x 10 + 20,000 = 245,000;
    #   320,000 x 1.1 (us; both are Claude 4.6 or later) = 352,000 per M = $0.352; + 2 searches $0.02
    #   (the credit was not applied: the writes keep their 1h rate)
    assert billed(got) == (approx(0.372), 0, None)
    redeemed = BetaUsage.model_validate(
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_creation_input_tokens": 20_000,
            "fallback_credit": {"status": {"type": "redeemed"}},
        }
    )
    recorded = RequestUsage()
    recorded.update(redeemed)
    # claude-opus-5, the credit redeemed: 1 in x 5 + 1 out x 25 + 20,000 writes at the read rate x 0.50
    #   = 10,030 per M -> $0.01003 (125,030 at the 5m write rate)
    assert price_request(price(table, "claude-opus-5"), recorded).usd == approx(0.01003)


def test_a_plain_usage_has_no_iterations(table: PriceTable) -> None:
    usage = Usage.model_validate(
        {"input_tokens": 5, "output_tokens": 6, "speed": "fast", "inference_geo": "global"}
    )
    recorded = RequestUsage()
    recorded.update(usage)
    assert (recorded.iterations, recorded.speed, recorded.geo) == (None, "fast", "global")
    # claude-opus-4-8 fast, global: 5 in x 10 + 6 out x 50 = 350 per M -> $0.00035, the counts as given
    assert price_request(price(table, "claude-opus-4-8"), recorded).usd == approx(0.00035)
    assert (recorded.input, recorded.output) == (5, 6)


# ---------------------------------------------------------------------------------------- savings


def test_cache_savings_are_the_reads_priced_as_input_less_their_price(table: PriceTable) -> None:
    # claude-haiku-4-5: 10,000 reads at $1 instead of $0.10 -> 9000 per M = $0.009
    haiku = price(table, "claude-haiku-4-5")
    assert price_request(haiku, usage_of(input=100, output=10, cache_read=10_000)).savings == approx(0.009)
    # with the modifiers: opus-4-8 fast ($10 in, $1 reads), US x1.1: 10,000 x 9 x 1.1 = 99,000 -> $0.099
    p = price(table, "claude-opus-4-8")
    fast_us = usage_of(input=1000, cache_read=10_000, speed="fast", geo="us")
    assert price_request(p, fast_us).savings == approx(0.099)
    # long context: sonnet-4-5 prompt 150,000 in + 60,000 reads > 200,000: $6 vs $0.60 on 60,000 reads
    #   = 324,000 per M -> $0.324 (the same prompt size either way, so the same tier)
    sonnet = price(table, "claude-sonnet-4-5")
    assert price_request(sonnet, usage_of(input=150_000, cache_read=60_000)).savings == approx(0.324)
    assert price_request(p, usage_of(input=1, output=1)).savings == 0.0
    unpriced = usage_of(input=1, output=1, cache_read=10, speed="fast")
    assert price_request(haiku, unpriced).savings == 0.0  # unpriced
