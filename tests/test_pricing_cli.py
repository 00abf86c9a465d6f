"""``claude-exporter pricing``: the table in use (with overrides), its date, and what the SDK knows that it
lacks, from the real installed SDK's ``Model`` type."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import anthropic
import pytest
import yaml
from claude_exporter.cli import main
from claude_exporter.cli.pricing import missing_models, render, sdk_models
from claude_exporter.recording.pricing import load_price_table

pytestmark = pytest.mark.unit


def test_sdk_models_come_from_the_installed_sdk() -> None:
    models = sdk_models()
    assert len(models) >= 10 and len(set(models)) == len(models)
    assert all(m.startswith("claude-") for m in models)
    # Exactly the string literals of the installed SDK's Model type, read here independently, in its order.
    literals: list[str] = []
    pending: list[Any] = [anthropic.types.Model]
    while pending:
        tp = pending.pop(0)
        if typing.get_origin(tp) is Literal:
            literals += [v for v in typing.get_args(tp) if isinstance(v, str) and v not in literals]
        else:
            pending[:0] = list(typing.get_args(tp))
    assert models == literals


def test_pricing_prints_the_table_its_date_and_its_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pricing"]) == 0
    out = capsys.readouterr().out
    table = load_price_table()
    assert f"Price table as of {table.as_of}" in out
    line = next(row for row in out.splitlines() if row.startswith("claude-opus-4-8 "))
    # input, output, 5m, 1h, read, fast in/out, long context, geo, estimated, cite
    assert line.split() == [
        "claude-opus-4-8",
        "5.00",
        "25.00",
        "6.25",
        "10.00",
        "0.50",
        "10.00/50.00",
        "-",
        "yes",
        "-",
        "model-pricing@2026-11-10",
    ]
    # The figures no official price list prints are named in the estimated column.
    fable = next(row for row in out.splitlines() if row.startswith("claude-fable-5-2 "))
    assert fable.split()[6:] == [
        "16.00/80.00",
        "-",
        "yes",
        "5m,1h,read,fast-in,fast-out",
        "launch-report@2026-11-09",
    ]
    preview = next(row for row in out.splitlines() if row.startswith("claude-mythos-preview "))
    assert "input,output,5m,1h,read" in preview.split()
    haiku = next(row for row in out.splitlines() if row.startswith("claude-haiku-5-5 "))
    assert ">100,000: 0.50/2.50" in haiku
    assert "web search         $0.01 per request" in out
    assert f"Every model the installed anthropic SDK {anthropic.__version__} knows" in out


def test_pricing_applies_the_configs_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "monitoring": {"a": {"metrics": ["tokens_used_input"]}},
                "exporter": {
                    "pricing_overrides": {
                        "claude-haiku-4-5": {"input": 0.9, "output": 4.5},
                        "my-model": {"input": 2, "output": 3},
                    }
                },
            }
        )
    )
    assert main(["pricing", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Overrides from " in out and "claude-haiku-4-5, my-model" in out
    row = next(r for r in out.splitlines() if r.startswith("claude-haiku-4-5 "))
    assert row.split()[:3] == ["claude-haiku-4-5", "0.90", "4.50"]
    assert row.endswith("config override")
    mine = next(r for r in out.splitlines() if r.startswith("my-model "))
    assert mine.split()[1:6] == ["2.00", "3.00", "2.50", "4.00", "0.20"]  # cache figures by the multipliers


def test_models_the_table_lacks_are_listed(tmp_path: Path) -> None:
    packaged = yaml.safe_load(
        (Path(__file__).parents[1] / "exporter/claude_exporter/recording/pricing/pricing.yaml").read_text()
    )
    packaged["models"] = {"claude-haiku-4-5": packaged["models"]["claude-haiku-4-5"]}
    packaged["modifiers"]["inference_geo"]["models"] = []
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(packaged))
    small = load_price_table(path)
    sdk = sdk_models()
    missing = missing_models(small, sdk)
    # Which models the installed SDK lists is a fact of its release: every one the small table cannot
    # price is listed, and none that it prices (the haiku alias and its dated snapshots resolve).
    lacked = [m for m in sdk if small.lookup(m) is None]
    assert lacked and missing == lacked
    assert not [m for m in missing if m.startswith("claude-haiku-4-5")]
    assert missing_models(small, ["claude-haiku-4-5-20251001", "claude-sonnet-4-5"]) == ["claude-sonnet-4-5"]
    text = render(small, sdk, "9.9.9")
    assert f"Models the installed anthropic SDK 9.9.9 knows that the table lacks ({len(missing)}):" in text
    for model in missing:
        assert f"\n  {model}\n" in text


def test_bad_config_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("monitoring: [1]\n")
    assert main(["pricing", "--config", str(config)]) == 2
    assert capsys.readouterr().err.startswith("claude-exporter pricing: ")
