"""Which families each agent's ``metrics:`` list enables, as both collectors apply it."""

from __future__ import annotations

from collections.abc import Callable

from claude_exporter.families import FAMILIES, TOKEN_TYPE_GROUPS

__all__ = ["family_flags"]

# Every group a family or token type is enabled by: each asked about once per agent.
_GROUPS = tuple(dict.fromkeys([*(g for f in FAMILIES for g in f.enabled_by), *TOKEN_TYPE_GROUPS.values()]))


def family_flags(enabled: Callable[[str, str], bool]) -> Callable[[str], dict[str, bool]]:
    """Per agent, which families and token types its ``metrics:`` list enables; computed once per agent
    (make one per scrape)."""
    cache: dict[str, dict[str, bool]] = {}

    def flags(agent: str) -> dict[str, bool]:
        found = cache.get(agent)
        if found is None:
            on = {group: enabled(agent, group) for group in _GROUPS}
            found = cache[agent] = {
                **{f.name: not f.enabled_by or any(on[group] for group in f.enabled_by) for f in FAMILIES},
                **{kind: on[group] for kind, group in TOKEN_TYPE_GROUPS.items()},
            }
        return found

    return flags
