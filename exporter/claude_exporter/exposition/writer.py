"""The recorder's families written straight to exposition text, each series' labels escaped once.

prometheus_client escapes every label of every sample and formats every line anew on each scrape, which
is most of a scrape's time. Here each label set's text (``name{agent="a",model="m"} ``) is built the first
time the series is seen and kept, a histogram's ``le`` strings are made once per bucket layout, and a
scrape only formats the values. The output is byte for byte what prometheus_client writes for the same
families, in the Prometheus text format and in OpenMetrics: labels in name order, values as
``floatToGoString`` writes them, histograms as buckets, count, sum.

The collector fills a :class:`FamilyText` per family exactly as it fills a prometheus_client family
(``add_metric``, ``add_histogram``), so both renderings come from one traversal of the series.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from itertools import accumulate
from typing import Any

from prometheus_client.utils import floatToGoString

from claude_exporter.families import Family

__all__ = ["FamilyText", "Writer", "checked", "escape", "go_float"]

_INF = math.inf


def go_float(value: Any) -> str:
    """``floatToGoString(value)``, without its float conversion and checks for the usual values."""
    cls = value.__class__
    if cls is int:
        if 0 <= value < 1_000_000:  # Go writes 1e+06 and up with an exponent
            return f"{value}.0"
    elif cls is float and -_INF < value < 1e6:  # neither NaN nor infinite: repr is Go's form
        return repr(value)
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def escape(value: str) -> str:
    """A label value as both text formats escape it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _pairs(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs)


def checked(labels: tuple[str, ...]) -> tuple[str, ...]:
    """``labels``, each made sure to be a ``str`` (a subclass could write itself otherwise)."""
    for label in labels:
        if label.__class__ is not str:
            raise TypeError(f"label value {label!r:.40} is not a string")
    return labels


class _Bounds:
    """A histogram's bucket layout as text: each bound's ``le`` value, ``+Inf`` last."""

    __slots__ = ("les", "with_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.les: tuple[str, ...] = (*(floatToGoString(b) for b in bounds), "+Inf")  # type: ignore[no-untyped-call]
        # prometheus_client leaves count and sum out when a bucket bound is negative.
        self.with_sum = float(self.les[0]) >= 0


class _Layout:
    """One family's fixed text (HELP and TYPE lines per format) and its label sets' text, kept across
    scrapes."""

    __slots__ = ("bounds", "cache", "names", "om_header", "samples", "text_header")

    def __init__(self, family: Family) -> None:
        base, doc = family.base, family.help
        text_name = family.name  # the text format names a counter family by its _total
        text_doc = doc.replace("\\", r"\\").replace("\n", r"\n")
        self.text_header = f"# HELP {text_name} {text_doc}\n# TYPE {text_name} {family.type}\n"
        self.om_header = f"# HELP {base} {escape(doc)}\n# TYPE {base} {family.type}\n"
        self.names = family.labels
        histogram = family.type == "histogram"
        self.samples: tuple[str, ...] = (
            (f"{base}_bucket", f"{base}_count", f"{base}_sum") if histogram else (family.name,)
        )
        # Label values -> the text before a sample's value: "name{...} ", or for a histogram the bucket
        # line's text before and after its le value, and the labels' "{...}" for the count and the sum.
        self.cache: dict[tuple[str, ...], Any] = {}
        self.bounds: dict[tuple[float, ...], _Bounds] = {}  # a histogram's bucket layouts (one or two)

    def prefix(self, labels: tuple[str, ...]) -> str:
        # As prometheus_client pairs them (dict(zip(...)), then sorted by name).
        pairs = sorted(zip(self.names, checked(labels), strict=False))
        return f"{self.samples[0]}{{{_pairs(pairs)}}} " if pairs else f"{self.samples[0]} "

    def histogram_prefixes(self, labels: tuple[str, ...]) -> tuple[str, str, str]:
        pairs = sorted(zip(self.names, checked(labels), strict=False))
        before = _pairs(p for p in pairs if p[0] < "le")
        after = _pairs(p for p in pairs if p[0] > "le")
        bucket = self.samples[0]
        head = f'{bucket}{{{before}{"," if before else ""}le="'
        tail = f'"{"," if after else ""}{after}}} '
        return head, tail, f"{{{_pairs(pairs)}}}" if pairs else ""


class FamilyText:
    """One family's sample lines for one scrape. A sample that cannot be written marks the family broken
    (the collector leaves it out whole); ``wanted``: which of its sample names a ``name[]`` filter keeps."""

    __slots__ = ("broken", "layout", "lines", "series", "wanted")

    def __init__(self, layout: _Layout, wanted: tuple[bool, ...]) -> None:
        self.layout = layout
        self.wanted = wanted
        self.lines: list[str] = []
        self.broken = False
        self.series = 0  # label sets added, for bounding the cache

    def add_metric(self, labels: tuple[str, ...], value: Any) -> None:
        if self.broken or not self.wanted[0]:
            return
        try:
            cache = self.layout.cache
            prefix = cache.get(labels)
            if prefix is None:
                prefix = cache[labels] = self.layout.prefix(labels)
            self.lines.append(f"{prefix}{go_float(value)}\n")
            self.series += 1
        except Exception:
            self.broken = True

    def add_histogram(
        self, labels: tuple[str, ...], bounds: tuple[float, ...], snapshot: tuple[list[int], float]
    ) -> None:
        """Non-cumulative ``counts`` (the last is +Inf's) and their ``sum``, as the storages keep them."""
        if self.broken:
            return
        try:
            counts, total = snapshot
            cache = self.layout.cache
            found = cache.get(labels)
            if found is None:
                found = cache[labels] = self.layout.histogram_prefixes(labels)
            head, tail, plain = found
            layout = self.layout.bounds.get(bounds)
            if layout is None:
                layout = self.layout.bounds[bounds] = _Bounds(bounds)
            les = layout.les
            if len(counts) != len(les):
                raise ValueError(f"{len(counts)} bucket counts for {len(les)} buckets")
            cumulative = list(accumulate(counts))
            last = cumulative[-1]
            bucket, count, total_wanted = self.wanted
            _, count_name, sum_name = self.layout.samples
            lines = self.lines
            if bucket:
                # Plain ints (the storages' counts) below 1e6 are written "n.0", as floatToGoString would.
                # (An int first and last: no float among the counts, so every running sum is an int.)
                ints = last.__class__ is int and cumulative[0].__class__ is int
                if ints and last < 1_000_000 and min(counts) >= 0:
                    lines += [f"{head}{le}{tail}{n}.0\n" for le, n in zip(les, cumulative, strict=True)]
                else:
                    lines += [
                        f"{head}{le}{tail}{go_float(float(n))}\n"
                        for le, n in zip(les, cumulative, strict=True)
                    ]
            if layout.with_sum:
                if count:
                    lines.append(f"{count_name}{plain} {go_float(float(last))}\n")
                if total_wanted:
                    lines.append(f"{sum_name}{plain} {go_float(float(total))}\n")
            self.series += 1
        except Exception:
            self.broken = True


class Writer:
    """The text of a collector's families, with their label sets' text kept from one scrape to the next.

    Scrapes may run at once (two Prometheus servers): each gets its own :class:`FamilyText` objects and
    only the caches are shared, where a race at worst builds the same string twice.
    """

    def __init__(self, families: Iterable[Family]) -> None:
        self._layouts = {family.name: _Layout(family) for family in families}

    def families(self, names: Collection[str] | None = None) -> dict[str, FamilyText]:
        """Empty families to fill; ``names``: the sample names a ``name[]`` filter keeps (None: all)."""
        out = {}
        for name, layout in self._layouts.items():
            wanted = tuple(names is None or sample in names for sample in layout.samples)
            out[name] = FamilyText(layout, wanted)
        return out

    def text(self, families: dict[str, FamilyText], openmetrics: bool, restricted: bool = False) -> bytes:
        """The filled families in order, without OpenMetrics' ``# EOF`` (the caller ends the exposition).
        ``restricted`` (a ``name[]`` filter): a family left without samples is left out, as prometheus_client
        leaves it out; otherwise it is written with its HELP and TYPE alone."""
        out: list[str] = []
        for family in families.values():
            if family.broken or (restricted and not family.lines):
                continue
            layout = family.layout
            out.append(layout.om_header if openmetrics else layout.text_header)
            out += family.lines
            # A label set seen once and gone since (the cache is otherwise as big as the series): start over
            # when the cache has grown to twice what a scrape uses.
            if not restricted and len(layout.cache) > 2 * family.series + 64:
                layout.cache.clear()
        return "".join(out).encode("utf-8")
