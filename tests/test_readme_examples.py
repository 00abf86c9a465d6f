"""The README's examples run as written: the plain script that drives an agent through ``FakeAnthropic``
outside pytest (README, "Outside pytest") is extracted and run in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

README = Path(__file__).resolve().parent.parent / "README.md"


def section_code(heading: str) -> str:
    """The first ```python block under the README heading ``heading`` (any level)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)^```python\n(.*?)^```$", text, re.S | re.M)
    assert match, f"README.md has no python block under {heading!r}"
    assert "\n#" not in match.group(1), f"the python block is not in the {heading!r} section itself"
    return match.group(2)


def test_the_fake_api_drives_a_plain_script(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(section_code("Outside pytest"))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "done 2"
    series = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines[1:]}
    labels = 'agent="support-bot",model="claude-sonnet-5-5"'
    assert series[f'claude_requests_total{{{labels},outcome="success"}}'] == 1
    assert series[f'claude_tokens_total{{{labels},type="input"}}'] == 12
    assert series[f'claude_tokens_total{{{labels},type="output"}}'] == 5
    retries = [
        value
        for name, value in series.items()
        if name.startswith("claude_retries_total") and 'reason="429"' in name
    ]
    assert retries == [1]
