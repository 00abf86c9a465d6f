"""The family declarations are the one source: what a scrape shows, the README table and the dashboards'
label table all follow them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from claude_exporter.families import BY_NAME, FAMILIES
from conftest import families, kw

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.system
def test_readme_metrics_table_is_generated_from_the_declarations() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "readme_metrics.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    readme = (ROOT / "README.md").read_text()
    for family in FAMILIES:
        assert f"| `{family.name}` | {family.type} | {', '.join(family.labels)} |" in readme


@pytest.mark.integration
def test_a_scrape_shows_every_declared_family_with_its_labels(reg, fake_anthropic) -> None:
    client = fake_anthropic.client(max_retries=0)
    client.messages.create(**kw())
    for _ in client.messages.create(**kw(), stream=True):
        pass
    exposed = families(reg)
    assert set(exposed) == {family.base for family in FAMILIES}
    for name, parsed in exposed.items():
        family = BY_NAME.get(name) or BY_NAME[name + "_total"]
        assert parsed.type == family.type, name
        for sample in parsed.samples:
            assert set(sample.labels) - {"le"} <= set(family.labels), (name, sample.labels)
