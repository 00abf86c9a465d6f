"""Which families each agent's ``metrics:`` list enables, as both collectors apply it."""

from __future__ import annotations

from collections.abc import Callable

from claude_exporter.families import FAMILIES, TOKEN_TYPE_GROUPS

__all__ = ["family_flags"]


def family_flags(enabled: Callable[[str, str], bool]) -> Callable[[str], dict[str, bool]]:
    """Per agent, which families and token types its ``metrics:`` list enables; computed once per agent
    (make one per scrape)."""
    cache: dict[str, dict[str, bool]] = {}

    def flags(agent: str) -> dict[str, bool]:
        found = cache.get(agent)
        if found is None:
            found = cache[agent] = {
                **{
                    f.name: not f.enabled_by or any(enabled(agent, group) for group in f.enabled_by)
                    for f in FAMILIES
                },
                **{kind: enabled(agent, group) for kind, group in TOKEN_TYPE_GROUPS.items()},
            }
        return found

    return flags
