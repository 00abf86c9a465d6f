"""Tests for claude_exporter.recording.pricing: the price table, name resolution and the cost arithmetic.

Every expected cost below is worked out by hand from the price list
(https://platform.claude.com/docs/en/about-claude/pricing), USD per million tokens (MTok).
"""

from __future__ import annotations

import math
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import anthropic.types
import pytest
import yaml
from anthropic.types import Usage
from anthropic.types.beta import BetaUsage
from claude_exporter.recording.pricing import (
    CACHE_MULTIPLIERS,
    PRICE_FIELDS,
    ModelPrice,
    PriceTable,
    load_price_table,
    price_request,
    with_overrides,
)
from claude_exporter.recording.usage import Usage as RequestUsage
from conftest import usage_of

pytestmark = pytest.mark.unit


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-12, abs=1e-15)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return load_price_table()


def _literal_values(tp: Any) -> list[str]:
    """All string literals in a type such as ``Union[Literal[...], str]`` (nested unions included)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return [v for v in typing.get_args(tp) if isinstance(v, str)]
    if origin is Union or origin is types.UnionType:
        return [v for arg in typing.get_args(tp) for v in _literal_values(arg)]
    return []


SDK_MODELS = _literal_values(anthropic.types.Model)


def price(table: PriceTable, model: str) -> ModelPrice:
    found = table.lookup(model)
    assert found is not None, model
    return found


# ------------------------------------------------------------------------------------------- coverage


def test_sdk_lists_models() -> None:
    # Guard against the alias structure changing so that the test below would check nothing: the installed
    # SDK's Model type yields many ids, among them at least one alias together with its dated snapshot
    # (which pair is a fact of the SDK release, so it is read from the SDK, not named here).
    assert len(SDK_MODELS) >= 10
    assert all(m.startswith("claude-") for m in SDK_MODELS)
    dated = [m for m in SDK_MODELS if re.fullmatch(r"claude-.+-\d{8}", m)]
    assert [m for m in dated if m[:-9] in SDK_MODELS], (dated, SDK_MODELS)


@pytest.mark.parametrize("model", SDK_MODELS)
def test_every_sdk_model_is_priced(table: PriceTable, model: str) -> None:
    p = price(table, model)
    assert p.input > 0
    assert p.output > 0
    # it resolves through the table itself (canonical id or alias), not by snapshot normalisation
    assert model in table.models() or model in table.aliases


@pytest.mark.parametrize(
    "model",
    [
        "claude-3-5-sonnet-20241022",
        "claude-3-5-sonnet-20240620",
        "claude-3-5-haiku-20241022",
        "claude-3-haiku-20240307",
        "claude-3-opus-20240229",
        "claude-3-7-sonnet-20250219",
        "claude-sonnet-4-20250514",
        "claude-sonnet-4-0",
        "claude-opus-4-20250514",
        "claude-opus-4-0",
        "claude-opus-4-1-20250805",
        "claude-opus-4-1",
        "claude-opus-4-5-20251101",
        "claude-haiku-4-5-20251001",
        "claude-3-5-sonnet-latest",
        "claude-3-5-haiku-latest",
        "claude-3-7-sonnet-latest",
        "claude-3-opus-latest",
    ],
)
def test_older_models_are_priced(table: PriceTable, model: str) -> None:
    assert table.lookup(model) is not None


def test_alias_and_canonical_share_one_price(table: PriceTable) -> None:
    assert table.lookup("claude-sonnet-4-5") is table.lookup("claude-sonnet-4-5-20250929")
    assert table.resolve("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert table.resolve("claude-opus-4-20250514") == "claude-opus-4-0"


def test_models_are_canonical_ids(table: PriceTable) -> None:
    models = table.models()
    assert len(models) == len(set(models))
    assert "claude-sonnet-4-5" in models
    assert "claude-sonnet-4-5-20250929" not in models  # an alias, not a canonical id


# ---------------------------------------------------------------------------------------- the figures


@pytest.mark.parametrize(
    ("model", "figures"),
    [
        # model: (input, output, 5m write, 1h write, cache read), read from the price list
        ("claude-fable-5-2", (8, 40, 10, 16, 0.20)),
        ("claude-fable-5-1", (10, 50, 12.50, 20, 0.25)),
        ("claude-mythos-5-1", (10, 50, 12.50, 20, 0.25)),
        ("claude-fable-5", (10, 50, 12.50, 20, 1)),
        ("claude-opus-5-5", (4, 20, 5, 8, 0.20)),
        ("claude-opus-5", (5, 25, 6.25, 10, 0.50)),
        ("claude-opus-4-6", (5, 25, 6.25, 10, 0.50)),
        ("claude-opus-4-1", (15, 75, 18.75, 30, 1.50)),
        ("claude-sonnet-5-5", (2, 10, 2.50, 4, 0.10)),
        ("claude-sonnet-5", (2, 10, 2.50, 4, 0.20)),
        ("claude-sonnet-4-6", (3, 15, 3.75, 6, 0.30)),
        ("claude-sonnet-4-5", (3, 15, 3.75, 6, 0.30)),
        ("claude-haiku-5-5", (0.10, 0.50, 0.125, 0.20, 0.01)),
        ("claude-haiku-4-5", (1, 5, 1.25, 2, 0.10)),
        ("claude-3-5-haiku-20241022", (0.80, 4, 1, 1.6, 0.08)),
        ("claude-3-haiku-20240307", (0.25, 1.25, 0.30, 0.50, 0.03)),
    ],
)
def test_figures_match_the_price_list(table: PriceTable, model: str, figures: tuple[float, ...]) -> None:
    p = price(table, model)
    assert (p.input, p.output, p.cache_write_5m, p.cache_write_1h, p.cache_read) == figures


# Cache figures that the price list itself prints off the standard 1.25x / 2x / 0.1x multipliers.
_LISTED_EXCEPTIONS = {
    ("claude-fable-5-2", "cache_read"),  # 0.025x
    ("claude-mythos-5-2", "cache_read"),
    ("claude-fable-5-1", "cache_read"),
    ("claude-mythos-5-1", "cache_read"),
    ("claude-opus-5-5", "cache_read"),  # 0.05x
    ("claude-sonnet-5-5", "cache_read"),  # 0.05x since 2026-10-07
    ("claude-3-haiku-20240307", "cache_write_5m"),  # listed as $0.30 (1.2x)
    ("claude-3-haiku-20240307", "cache_read"),  # listed as $0.03 (0.12x)
}


@pytest.mark.parametrize("model", load_price_table().models())
def test_cache_figures_follow_the_stated_multipliers(table: PriceTable, model: str) -> None:
    """Catches a typo in the table: every cache figure is the documented multiple of input, or one of the
    exceptions the price list prints."""
    p = table.price(model)
    for field, mult in CACHE_MULTIPLIERS.items():
        if (model, field) in _LISTED_EXCEPTIONS:
            assert getattr(p, field) != pytest.approx(p.input * mult)
            continue
        assert getattr(p, field) == pytest.approx(p.input * mult), (model, field)
    if p.long_context_threshold is not None:
        assert p.long_context_input is not None
        for field, mult in CACHE_MULTIPLIERS.items():
            assert getattr(p, "long_context_" + field) == pytest.approx(p.long_context_input * mult)


def test_long_context_applies_only_where_the_price_list_says(table: PriceTable) -> None:
    with_premium = {m for m in table.models() if table.price(m).long_context_threshold is not None}
    assert with_premium == {"claude-sonnet-4-5", "claude-sonnet-4-0", "claude-haiku-5-5"}
    sonnet = table.price("claude-sonnet-4-5")
    assert (sonnet.long_context_threshold, sonnet.long_context_input, sonnet.long_context_output) == (
        200_000,
        6,
        22.50,
    )
    haiku = table.price("claude-haiku-5-5")
    assert haiku.long_context_threshold == 100_000
    assert (haiku.long_context_input, haiku.long_context_output, haiku.long_context_cache_read) == (
        0.50,
        2.50,
        0.05,
    )


# ------------------------------------------------------------------------------------- price_request


def test_plain_input_and_output(table: PriceTable) -> None:
    # claude-sonnet-4-5: 1000 input x $3/M + 500 output x $15/M = 0.003 + 0.0075 = $0.0105
    sonnet = price(table, "claude-sonnet-4-5")
    assert price_request(sonnet, usage_of(input=1000, output=500)).usd == approx(0.0105)
    # claude-opus-4-1: 2000 input x $15/M + 1000 output x $75/M = 0.03 + 0.075 = $0.105
    opus = price(table, "claude-opus-4-1")
    assert price_request(opus, usage_of(input=2000, output=1000)).usd == approx(0.105)
    # claude-fable-5-2: 1,000,000 input x $8/M + 100,000 output x $40/M = 8 + 4 = $12
    p = price(table, "claude-fable-5-2")
    assert price_request(p, usage_of(input=1_000_000, output=100_000)).usd == approx(12.0)


def test_zero_tokens_cost_nothing(table: PriceTable) -> None:
    assert price_request(price(table, "claude-opus-4-6"), usage_of()).usd == 0.0


def test_5m_and_1h_cache_writes_are_priced_apart(table: PriceTable) -> None:
    # claude-opus-4-6: 100 input x $5 = 0.0005; 2000 5m writes x $6.25 = 0.0125;
    # 1000 1h writes x $10 = 0.01; 200 output x $25 = 0.005  ->  $0.028
    usage = usage_of(input=100, output=200, cache_5m=2000, cache_1h=1000)
    assert price_request(price(table, "claude-opus-4-6"), usage).usd == approx(0.028)
    # Same 3000 written tokens all at 5m: 0.0005 + 3000 x $6.25 = 0.01875 + 0.005 -> $0.02425
    usage = usage_of(input=100, output=200, cache_5m=3000)
    assert price_request(price(table, "claude-opus-4-6"), usage).usd == approx(0.02425)


def test_cache_reads(table: PriceTable) -> None:
    # claude-haiku-4-5: 50 input x $1 = 0.00005; 10,000 reads x $0.10 = 0.001; 100 output x $5 = 0.0005
    #   -> $0.00155
    usage = usage_of(input=50, output=100, cache_read=10_000)
    assert price_request(price(table, "claude-haiku-4-5"), usage).usd == approx(0.00155)
    # claude-fable-5-1 reads at 0.025x: 1,000,000 reads x $0.25 = $0.25 (Fable 5 pays $1)
    assert price_request(price(table, "claude-fable-5-1"), usage_of(cache_read=1_000_000)).usd == approx(0.25)
    assert price_request(price(table, "claude-fable-5"), usage_of(cache_read=1_000_000)).usd == approx(1.0)
    # claude-sonnet-5-5 reads at $0.10 since 2026-10-07: 500,000 reads -> $0.05
    assert price_request(price(table, "claude-sonnet-5-5"), usage_of(cache_read=500_000)).usd == approx(0.05)


def test_batch_discount(table: PriceTable) -> None:
    # claude-sonnet-4-5 on the Batch API: (1000 x $3 + 500 x $15) / 1M x 50% = 0.0105 / 2 = $0.00525
    usage = usage_of(input=1000, output=500, service_tier="batch")
    assert price_request(price(table, "claude-sonnet-4-5"), usage).usd == approx(0.00525)
    # The price list's batch rows: Haiku 4.5 $0.50 in / $2.50 out:
    # 1,000,000 in x $0.50 + 1,000,000 out x $2.50 = $3.00
    usage = usage_of(input=1_000_000, output=1_000_000, service_tier="batch")
    assert price_request(price(table, "claude-haiku-4-5"), usage).usd == approx(3.0)
    # caching stacks with batch: claude-opus-4-6 10,000 reads x $0.50 x 50% = $0.0025
    usage = usage_of(cache_read=10_000, service_tier="batch")
    assert price_request(price(table, "claude-opus-4-6"), usage).usd == approx(0.0025)


def test_long_context_premium_above_the_threshold(table: PriceTable) -> None:
    p = price(table, "claude-sonnet-4-5")
    # 150,000 input + 60,000 cache reads = 210,000 prompt tokens > 200,000: every token at long rates.
    # 150,000 x $6 = 0.9; 60,000 reads x $0.60 (0.1 x $6) = 0.036; 1000 output x $22.50 = 0.0225
    #   -> $0.9585
    usage = usage_of(input=150_000, output=1000, cache_read=60_000)
    assert price_request(p, usage).usd == approx(0.9585)
    # 200,001 input x $6 = 1.200006 + 1000 output x $22.50 = 0.0225 -> $1.222506
    assert price_request(p, usage_of(input=200_001, output=1000)).usd == approx(1.222506)
    # cache writes count toward the threshold: 100,000 input + 100,001 5m writes
    #   100,000 x $6 = 0.6; 100,001 x $7.50 = 0.7500075; no output -> $1.3500075
    assert price_request(p, usage_of(input=100_000, cache_5m=100_001)).usd == approx(1.3500075)


def test_no_long_context_premium_at_or_below_the_threshold(table: PriceTable) -> None:
    p = price(table, "claude-sonnet-4-5")
    # exactly 200,000 input: 200,000 x $3 = 0.6 + 1000 output x $15 = 0.015 -> $0.615
    assert price_request(p, usage_of(input=200_000, output=1000)).usd == approx(0.615)
    # output does not count toward the threshold: 1000 input x $3 + 300,000 output x $15 = $4.503
    assert price_request(p, usage_of(input=1000, output=300_000)).usd == approx(4.503)
    # Sonnet 4.6 has no premium at any size: 900,000 input x $3 = $2.70
    assert price_request(price(table, "claude-sonnet-4-6"), usage_of(input=900_000)).usd == approx(2.70)


def test_haiku_5_5_prompt_length_tiers(table: PriceTable) -> None:
    p = price(table, "claude-haiku-5-5")
    # up to 100,000: 100,000 input x $0.10 = 0.01 + 1000 output x $0.50 = 0.0005 -> $0.0105
    assert price_request(p, usage_of(input=100_000, output=1000)).usd == approx(0.0105)
    # over: 100,001 input x $0.50 = 0.0500005 + 1000 output x $2.50 = 0.0025 -> $0.0525005
    assert price_request(p, usage_of(input=100_001, output=1000)).usd == approx(0.0525005)
    # 90,000 input + 20,000 reads = 110,000 > 100,000:
    #   90,000 x $0.50 = 0.045; 20,000 x $0.05 = 0.001; 1000 x $2.50 = 0.0025 -> $0.0485
    usage = usage_of(input=90_000, output=1000, cache_read=20_000)
    assert price_request(p, usage).usd == approx(0.0485)


def test_long_context_and_batch_stack(table: PriceTable) -> None:
    # claude-sonnet-4-5, 250,000 input + 2000 output on the Batch API:
    #   (250,000 x $6 + 2000 x $22.50) / 1M = 1.5 + 0.045 = 1.545; x 50% -> $0.7725
    usage = usage_of(input=250_000, output=2000, service_tier="batch")
    assert price_request(price(table, "claude-sonnet-4-5"), usage).usd == approx(0.7725)


def test_long_context_without_cache_rates_falls_back_to_base_cache_rates() -> None:
    p = ModelPrice(1, 2, 3, 4, 5, long_context_threshold=10, long_context_input=10, long_context_output=20)
    # prompt 10 input + 1 read = 11 > 10: 10 input x $10 + 1 output x $20 + 1 read x $5 (base rate)
    #   = 125 per M -> $0.000125
    assert price_request(p, usage_of(input=10, output=1, cache_read=1)).usd == approx(125e-6)


# ------------------------------------------------------------------------------------------- lookup


@pytest.mark.parametrize(
    "model",
    ["claude-opus-5-6", "claude-fable-5-3", "claude-opus-4-6-fast", "gpt-4o", "", "anthropic.gpt", "claude"],
)
def test_unknown_model_is_unpriced(table: PriceTable, model: str) -> None:
    assert table.lookup(model) is None
    assert table.resolve(model) is None


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        # dated snapshots not in the table -> their family
        ("claude-haiku-4-5-20991231", "claude-haiku-4-5"),
        ("claude-fable-5-1-20991231", "claude-fable-5-1"),
        ("claude-sonnet-4-5-20991231", "claude-sonnet-4-5"),
        # Bedrock
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("us.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("eu.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet-20241022"),
        ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku-20240307"),
        ("anthropic.claude-haiku-5-5", "claude-haiku-5-5"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0",
            "claude-sonnet-4-0",
        ),
        # Vertex AI
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet-20241022"),
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),
        ("claude-haiku-4-5@20991231", "claude-haiku-4-5"),
        ("claude-opus-4-6@default", "claude-opus-4-6"),
        # other spellings
        ("anthropic/claude-opus-4-6", "claude-opus-4-6"),
        ("claude-opus-4-6[1m]", "claude-opus-4-6"),
        ("  Claude-Sonnet-4-5  ", "claude-sonnet-4-5"),
    ],
)
def test_name_normalisation(table: PriceTable, name: str, canonical: str) -> None:
    assert table.resolve(name) == canonical
    assert table.lookup(name) is table.price(canonical)
    assert table.resolve(name) == canonical  # second time from the lookup cache


def test_dated_snapshot_needs_its_family_in_the_table(table: PriceTable) -> None:
    assert table.lookup("claude-opus-5-6-20991231") is None
    assert table.lookup("anthropic.claude-opus-5-6-20991231-v1:0") is None


# ---------------------------------------------------------------------------------------- overrides


def test_partial_override_keeps_other_figures(table: PriceTable) -> None:
    new = with_overrides(table, {"claude-sonnet-4-5": {"input": 2.0}})
    p = price(new, "claude-sonnet-4-5")
    assert (p.input, p.output, p.cache_write_5m, p.cache_read) == (2.0, 15, 3.75, 0.30)
    assert p.long_context_threshold == 200_000  # long-context figures kept
    assert new.lookup("claude-sonnet-4-5-20250929") is p  # the alias follows
    assert price(table, "claude-sonnet-4-5").input == 3  # the original is untouched
    assert (new.as_of, new.source) == (table.as_of, table.source)
    # 1000 input x $2 + 500 output x $15 = 0.002 + 0.0075 -> $0.0095
    assert price_request(p, usage_of(input=1000, output=500)).usd == approx(0.0095)


def test_override_by_alias_overrides_the_canonical_model(table: PriceTable) -> None:
    new = with_overrides(table, {"claude-haiku-4-5-20251001": {"output": 4}})
    assert price(new, "claude-haiku-4-5").output == 4
    assert price(new, "claude-haiku-4-5").input == 1


def test_override_adds_a_new_model_with_derived_cache_figures(table: PriceTable) -> None:
    new = with_overrides(table, {"my-tuned-claude": {"input": 4, "output": 12}})
    p = price(new, "my-tuned-claude")
    # cache figures derived with the documented multipliers: 1.25 x 4, 2 x 4, 0.1 x 4
    assert (p.input, p.output) == (4.0, 12.0)
    assert p.cache_write_5m == pytest.approx(5.0)
    assert p.cache_write_1h == pytest.approx(8.0)
    assert p.cache_read == pytest.approx(0.4)
    assert p.batch_multiplier == 0.5
    assert "my-tuned-claude" in new.models()
    assert table.lookup("my-tuned-claude") is None
    # 1000 input x $4 + 1000 5m writes x $5 + 1000 output x $12 = 0.004 + 0.005 + 0.012 -> $0.021
    assert price_request(p, usage_of(input=1000, output=1000, cache_5m=1000)).usd == approx(0.021)


def test_new_model_keeps_given_cache_figures(table: PriceTable) -> None:
    new = with_overrides(table, {"other": {"input": 1, "output": 2, "cache_read": 0.5}})
    assert price(new, "other").cache_read == 0.5
    assert price(new, "other").cache_write_5m == pytest.approx(1.25)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"claude-sonnet-4-5": {"inptu": 1.0}}, ["claude-sonnet-4-5", "inptu"]),
        ({"claude-sonnet-4-5": {"input": -1.0}}, ["claude-sonnet-4-5", "input"]),
        ({"claude-sonnet-4-5": {"output": "15"}}, ["claude-sonnet-4-5", "output"]),
        ({"claude-sonnet-4-5": {"output": float("nan")}}, ["claude-sonnet-4-5", "output"]),
        ({"claude-sonnet-4-5": {"output": True}}, ["claude-sonnet-4-5", "output"]),
        ({"brand-new-model": {"input": 1.0}}, ["brand-new-model", "output"]),
        ({"brand-new-model": {"output": 1.0}}, ["brand-new-model", "input"]),
        ({"brand-new-model": 3.0}, ["brand-new-model"]),
        ({"": {"input": 1.0, "output": 2.0}}, ["model name"]),
    ],
)
def test_bad_override_raises_naming_model_and_key(
    table: PriceTable, overrides: Any, words: list[str]
) -> None:
    with pytest.raises(ValueError) as info:
        with_overrides(table, overrides)
    for word in words:
        assert word in str(info.value)


def test_override_argument_must_be_a_mapping(table: PriceTable) -> None:
    with pytest.raises(ValueError):
        with_overrides(table, [("claude-sonnet-4-5", {"input": 1})])  # type: ignore[arg-type]


# -------------------------------------------------------------------------- the 5m / 1h cache writes

# Prices that read the 5-minute / 1-hour split back from a cost: a 5-minute write costs $1 per million
# tokens, a 1-hour write $1 each, nothing else anything, and no service tier changes that.
SPLIT = ModelPrice(0, 0, 1, 1_000_000, 0, batch_multiplier=1.0)


def split_of(usage: object) -> tuple[int, int]:
    """``(5-minute, 1-hour)`` cache writes as price_request bills them: an SDK usage as the recorder
    reads it (``Usage.update``), or a dict as an entry of ``usage.iterations``."""
    recorded = RequestUsage()
    if isinstance(usage, dict):
        recorded.iterations = [{"type": "message", **usage}]
    else:
        recorded.update(usage)
    hour, five = divmod(round(price_request(SPLIT, recorded).usd * 1e6), 1_000_000)
    return five, hour


def test_cache_write_split_with_breakdown() -> None:
    usage = Usage.model_validate(
        {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 3,
            "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 60},
        }
    )
    assert split_of(usage) == (40, 60)


def test_cache_write_split_without_breakdown_counts_all_as_5m() -> None:
    usage = Usage.model_validate(
        {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 0,
        }
    )
    assert usage.cache_creation is None
    assert split_of(usage) == (100, 0)


def test_cache_write_split_with_no_cache_fields() -> None:
    usage = Usage.model_validate({"input_tokens": 10, "output_tokens": 5})
    assert split_of(usage) == (0, 0)


def test_cache_write_split_unaccounted_remainder_counts_as_5m() -> None:
    usage = Usage.model_validate(
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_creation_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 70},
        }
    )
    assert split_of(usage) == (30, 70)


def test_cache_write_split_of_beta_usage_and_iteration_dicts() -> None:
    beta = BetaUsage.model_validate(
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_creation_input_tokens": 7,
            "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 5},
        }
    )
    assert split_of(beta) == (2, 5)
    as_dict = {
        "cache_creation_input_tokens": 9,
        "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 5},
    }
    assert split_of(as_dict) == (4, 5)
    assert split_of({"cache_creation_input_tokens": 9}) == (9, 0)
    assert split_of({"cache_creation_input_tokens": None, "cache_creation": None}) == (0, 0)


def test_an_sdk_usage_is_billed_on_every_count(table: PriceTable) -> None:
    usage = Usage.model_validate(
        {
            "input_tokens": 1000,
            "output_tokens": 500,
            "cache_creation_input_tokens": 3000,
            "cache_read_input_tokens": 4000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
            "service_tier": "batch",
        }
    )
    recorded = RequestUsage()
    recorded.update(usage)
    assert (recorded.input, recorded.output, recorded.cache_read, recorded.service_tier) == (
        1000,
        500,
        4000,
        "batch",
    )
    assert split_of(usage) == (1000, 2000)
    # claude-sonnet-4-5: 1000 x $3 + 1000 x $3.75 + 2000 x $6 + 4000 x $0.30 + 500 x $15
    #   = 0.003 + 0.00375 + 0.012 + 0.0012 + 0.0075 = 0.02745; batch x 50% -> $0.013725
    assert price_request(price(table, "claude-sonnet-4-5"), recorded).usd == approx(0.013725)
    standard = RequestUsage()
    standard.update(Usage.model_validate({"input_tokens": 1, "output_tokens": 2}))
    assert (standard.cache_creation, standard.cache_read, standard.service_tier, standard.speed) == (
        0,
        0,
        None,
        None,
    )
    # at list rates: 1 x $3 + 2 x $15 = 33 per M -> $0.000033
    assert price_request(price(table, "claude-sonnet-4-5"), standard).usd == approx(33e-6)


# ----------------------------------------------------------------------------------- the data file


def _packaged_yaml() -> dict[str, Any]:
    packaged = resources.files("claude_exporter.recording.pricing").joinpath("pricing.yaml")
    text = packaged.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def test_yaml_has_as_of_and_source(table: PriceTable) -> None:
    data = _packaged_yaml()
    assert isinstance(data["as_of"], str)
    assert len(data["as_of"]) == 10 and data["as_of"][4] == "-" and data["as_of"][7] == "-"
    assert data["source"].startswith("https://platform.claude.com/docs/")
    assert "pricing" in data["source"]
    assert (table.as_of, table.source) == (data["as_of"], data["source"])
    assert data["modifiers"]["batch"]["multiplier"] == 0.5
    assert {k: v for k, v in data["cache_multipliers"].items() if k != "cite"} == dict(CACHE_MULTIPLIERS)


def test_yaml_models_are_complete() -> None:
    for name, entry in _packaged_yaml()["models"].items():
        for field in PRICE_FIELDS:
            value = entry[field]
            assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, (name, field)


def test_load_price_table_is_cached() -> None:
    assert load_price_table() is load_price_table()


def test_load_price_table_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    row = {**_ROW, "aliases": ["m1-20300101"]}
    path.write_text(
        yaml.safe_dump({**_top(), "source": "https://example.invalid/prices", "models": {"m1": row}}),
        encoding="utf-8",
    )
    t = load_price_table(path)
    assert (t.as_of, t.source, t.models()) == ("2030-01-01", "https://example.invalid/prices", ["m1"])
    assert t.resolve("m1-20300101") == "m1"
    assert load_price_table(str(path)) is t


_ROW = {
    "input": 1,
    "output": 1,
    "cache_write_5m": 1,
    "cache_write_1h": 1,
    "cache_read": 1,
    "cite": "s@2030-01-01",
}


def _top() -> dict[str, Any]:
    """The smallest valid top level of a price table: one section, every modifier cited."""
    cite = "s@2030-01-01"
    return {
        "as_of": "2030-01-01",
        "source": "x",
        "sections": {"s": "https://example.invalid/prices#s"},
        "cache_multipliers": {**CACHE_MULTIPLIERS, "cite": cite},
        "modifiers": {
            "batch": {"multiplier": 0.5, "cite": cite},
            "priority": {"multiplier": 1.0, "cite": cite},
            "inference_geo": {"multipliers": {"us": 1.1}, "models": [], "cite": cite},
            "server_tools": {
                "web_search": {"usd_per_request": 0.01, "cite": cite},
                "web_fetch": {"usd_per_request": 0, "cite": cite},
            },
            "unpriced_platforms": {"platforms": ["bedrock"], "cite": cite},
        },
    }


def _doc(models: Any, **top: Any) -> str:
    return yaml.safe_dump({**_top(), **top, "models": models})


def _without(key: str) -> dict[str, Any]:
    top = _top()
    del top[key]
    return top


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (yaml.safe_dump({**_without("as_of"), "models": {"m": _ROW}}), ["as_of"]),
        (yaml.safe_dump({**_without("source"), "models": {"m": _ROW}}), ["source"]),
        (yaml.safe_dump({**_without("sections"), "models": {"m": _ROW}}), ["sections"]),
        (_doc({"m": {k: v for k, v in _ROW.items() if k != "cite"}}), ["m", "cite"]),
        (_doc({"m": {**_ROW, "cite": "s"}}), ["m", "cite"]),
        (_doc({"m": {**_ROW, "cite": "nowhere@2030-01-01"}}), ["m", "nowhere"]),
        (_doc({"m": {**_ROW, "fast": {"input": 2, "output": 3}}}), ["m", "fast"]),
        (
            _doc({"m": {**_ROW, "long_context": {"threshold": 5, "input": 2, "output": 3}}}),
            ["long_context", "cite"],
        ),
        (
            _doc({"m": _ROW}, modifiers={**_top()["modifiers"], "batch": {"multiplier": 0.5}}),
            ["modifiers.batch"],
        ),
        (_doc({"m": {k: v for k, v in _ROW.items() if k != "cache_read"}}), ["m", "cache_read"]),
        (_doc({"m": {**_ROW, "input": -1}}), ["m", "input"]),
        (_doc({"m": {**_ROW, "inptu": 1}}), ["m", "inptu"]),
        (
            _doc({"m": {**_ROW, "long_context": {"threshold": 5, "input": 2, "cite": "s@2030-01-01"}}}),
            ["m", "long_context.output"],
        ),
        (_doc({"m": {**_ROW, "aliases": ["n"]}, "n": _ROW}), ["n", "twice"]),
        (_doc({}), ["models"]),
        (
            _doc(
                {"m": _ROW},
                modifiers={**_top()["modifiers"], "batch": {"multiplier": 2, "cite": "s@2030-01-01"}},
            ),
            ["batch.multiplier"],
        ),
        ("[not, a, mapping", ["YAML"]),
        # An estimate must name a figure the entry gives.
        (_doc({"m": {**_ROW, "estimated": ["fast.input"]}}), ["m", "estimated", "fast.input"]),
        (_doc({"m": {**_ROW, "estimated": ["cache_rad"]}}), ["m", "estimated", "cache_rad"]),
        (_doc({"m": {**_ROW, "estimated": "input"}}), ["m", "estimated"]),
    ],
)
def test_malformed_table_raises(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_price_table(path)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("models: !!set {a, b}\n", ["!!set", "not accepted"]),
        ("as_of: !!timestamp x\n", ["!!timestamp"]),
        ("models: [" + ",".join(["1"] * 60_000) + "]\n", ["50000"]),
        ("models: " + "[" * 5_000 + "]" * 5_000 + "\n", ["bad.yaml"]),
        ("models: {a: 1, a: 2}\n", ["a"]),
    ],
    ids=["set-tag", "timestamp-tag", "huge-list", "deep", "duplicate-key"],
)
def test_a_hostile_price_file_is_refused_as_a_configuration_is(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    # A user's price file (pricing.file) went through yaml.safe_load: !!set and !!timestamp built Python
    # objects the table then tripped on, and a 1 MiB list cost seconds (issue 18, rows 12 and 13).
    test_malformed_table_raises(tmp_path, text, words)


def test_a_price_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (1 << 20) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="too large for a price table"):
        load_price_table(path)


def test_model_price_validates() -> None:
    with pytest.raises(ValueError):
        ModelPrice(-1, 1, 1, 1, 1)
    with pytest.raises(ValueError):
        ModelPrice(1, 1, 1, 1, 1, long_context_threshold=10)  # no long-context rates
    with pytest.raises(ValueError):
        ModelPrice(1, 1, 1, 1, 1, long_context_input=2, long_context_output=2)  # no threshold


def test_the_per_request_cost_charges_an_unaccounted_cache_write_part_as_5m() -> None:
    """A part of the cache-write total that the 5m/1h breakdown leaves out is charged as 5-minute writes,
    on an SDK usage as the recorder reads it."""
    price = load_price_table().lookup("claude-haiku-4-5")
    assert price is not None
    raw = {
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 30,
        "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 500},
    }
    usage = RequestUsage()
    usage.update(anthropic.types.Usage.model_validate(raw))
    # haiku-4-5: 10 x $1 + 20 x $5 + (300 + 200 unaccounted) x $1.25 + 500 x $2 + 30 x $0.10, per million
    expected = (10 * 1 + 20 * 5 + 500 * 1.25 + 500 * 2 + 30 * 0.10) / 1e6
    # no cache-read savings to speak of: 30 reads x ($1 - $0.10) = $0.000027
    got = price_request(price, usage)
    assert (got.usd, got.unpriced, got.reason, got.savings) == (
        pytest.approx(expected),
        0,
        None,
        pytest.approx(30 * 0.9 / 1e6),
    )


def test_an_override_of_an_estimated_figure_is_no_longer_an_estimate() -> None:
    table = with_overrides(load_price_table(), {"claude-fable-5-2": {"cache_read": 0.25}})
    estimated = table.price("claude-fable-5-2").estimated
    assert "cache_read" not in estimated and {"cache_write_5m", "fast.input"} <= estimated
