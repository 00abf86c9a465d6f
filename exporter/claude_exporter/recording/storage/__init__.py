"""Where the recorder keeps its values: in memory, or in per-process mmap files (multiprocess mode).

The choice is made once, when the recorder opens (:func:`open_storage`), the way prometheus_client picks
its value class once: the recorder then builds its series, counters and running-work maps from the
storage it was given and never asks again. Both storages keep the same fields under the same names
(:mod:`claude_exporter.recording.storage.layout`); the exposition only reads them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from claude_exporter.recording.storage.memory import MemoryStorage

__all__ = ["MemoryStorage", "Storage", "open_storage"]


class Storage(Protocol):
    """What the recorder builds on."""

    path: str | None  # the directory of the files, None in memory
    running_calls: dict[int, Any]
    running_executions: dict[int, Any]

    def request_series(
        self, agent: str, model: str, duration_bounds: tuple[float, ...], ttft_bounds: tuple[float, ...]
    ) -> Any: ...

    def exec_series(
        self,
        agent: str,
        task: str,
        duration_bounds: tuple[float, ...],
        token_bounds: tuple[int, ...],
        request_bounds: tuple[int, ...],
    ) -> Any: ...

    def counter(self, family: str) -> Any: ...

    def rate_limit_sink(self, fault: Callable[[str], None]) -> Any: ...

    def build_info(self, labelvalues: tuple[str, str]) -> None: ...

    def close(self) -> None: ...


def open_storage(multiproc_dir: str | None) -> Storage:
    """Memory, or the mmap files in ``multiproc_dir`` (prometheus_client's ``PROMETHEUS_MULTIPROC_DIR``)."""
    if not multiproc_dir:
        return MemoryStorage()
    if not os.path.isdir(multiproc_dir):
        raise ValueError(f"PROMETHEUS_MULTIPROC_DIR={multiproc_dir!r} is not a directory (create it first)")
    from claude_exporter.recording.storage.mmap import MmapStorage  # prometheus_client's file format

    return MmapStorage(multiproc_dir)
