"""pytest plugin (entry point ``pytest11: claude_exporter``): the ``fake_anthropic`` fixture.

    def test_hello(fake_anthropic):
        fake_anthropic.script(Reply(text="hi"))
        msg = fake_anthropic.client().messages.create(model="m", max_tokens=8, messages=[...])
        assert msg.content[0].text == "hi"

pytest loads this module in every session of a project that has claude-exporter installed, so it imports
nothing heavy: the fake is imported when a test first asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .fake_api import FakeAnthropic

__all__ = ["fake_anthropic"]


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A started `FakeAnthropic` on a free 127.0.0.1 port, stopped after the test."""
    from .fake_api import FakeAnthropic

    with FakeAnthropic() as fake:
        yield fake
