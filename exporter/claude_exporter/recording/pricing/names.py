"""Model names as responses and clients report them, reduced to a key of the price table.

Names that resolve (case-insensitive, surrounding blanks ignored), in the order they are tried:

1. a canonical id or an alias from the table: ``claude-sonnet-4-5``, ``claude-sonnet-4-5-20250929``;
2. after stripping, in this order:

   * a trailing bracketed tag, as Claude Code writes it: ``claude-opus-4-6[1m]``;
   * everything up to the last ``/``: Bedrock ARNs
     (``arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-...``) and
     ``publisher/model`` forms (``anthropic/claude-opus-4-6``);
   * the Bedrock form ``[<region>.]anthropic.<id>[-v<N>[:<M>]]``, where ``<region>`` is one dot-free
     prefix such as ``us``, ``eu``, ``apac``, ``global``, ``us-gov``:
     ``anthropic.claude-sonnet-4-5-20250929-v1:0``, ``us.anthropic.claude-opus-4-6-v1``;
   * the Vertex AI form ``<id>[-v<N>]@<YYYYMMDD>`` becomes ``<id>-<YYYYMMDD>``
     (``claude-sonnet-4-5@20250929``, ``claude-3-5-sonnet-v2@20241022``); any other ``@<tag>`` (such as
     ``@default``) is dropped;

   the result is looked up as in 1;
3. a dated snapshot missing from the table, ``<family>-<YYYYMMDD>``, resolves to ``<family>`` when the
   family is in the table: ``claude-haiku-4-5-20991231`` -> ``claude-haiku-4-5``.

Nothing else is guessed: an unlisted point release (``claude-opus-5-6``) or an unknown suffix
(``claude-opus-4-6-fast``) is unpriced, never priced as a sibling.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["resolve_name"]

_TAG = re.compile(r"\[[^\]]*\]$")
_BEDROCK = re.compile(
    r"^(?:[a-z]{2,10}(?:-[a-z]+)?\.)?anthropic\.(?P<id>[a-z0-9][a-z0-9.-]*?)(?:-v\d+(?::\d+)?)?$"
)
_VERTEX = re.compile(r"^(?P<id>[a-z0-9][a-z0-9.-]*?)(?:-v\d+)?@(?P<tag>[a-z0-9._-]*)$")
_DATED = re.compile(r"^(?P<family>.+)-(?P<date>\d{8})$")


def resolve_name(index: Mapping[str, str], model: object) -> str | None:
    """The canonical id that ``model`` names, by the rules above; ``index`` maps every canonical id and
    alias (lower case) to its canonical id. ``None`` when nothing matches."""
    if not isinstance(model, str):
        return None
    name = model.strip().lower()
    found = index.get(name)
    if found is not None:
        return found
    name = _strip_forms(name)
    found = index.get(name)
    if found is not None:
        return found
    m = _DATED.match(name)
    if m is not None:
        return index.get(m.group("family"))
    return None


def _strip_forms(name: str) -> str:
    name = _TAG.sub("", name)
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    m = _BEDROCK.match(name)
    if m is not None:
        name = m.group("id")
    m = _VERTEX.match(name)
    if m is not None:
        tag = m.group("tag")
        name = m.group("id") + ("-" + tag if len(tag) == 8 and tag.isdigit() else "")
    return name
