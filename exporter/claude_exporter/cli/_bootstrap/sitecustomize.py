"""Imported by Python at start-up when ``claude-exporter run`` put this directory on ``PYTHONPATH``.

It first runs the ``sitecustomize`` it shadows (a distribution's or a virtualenv's own), then
:func:`claude_exporter.cli.run.activate`, which instruments the process from the ``CLAUDE_EXPORTER_*``
variables. It takes its own directory off ``sys.path`` again, so the program sees the path it would see
without it. Nothing happens when this file is imported under another name.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

__all__: list[str] = []

_HERE = os.path.dirname(os.path.abspath(__file__))


def _chain() -> None:
    """Run the next ``sitecustomize`` on the path, as Python would have without this one."""
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


def _activate() -> None:
    try:
        from claude_exporter.cli.run import activate
    except Exception as err:  # another interpreter, without claude-exporter installed: run unmeasured
        print(f"claude-exporter: instrumentation is off: {err}", file=sys.stderr, flush=True)
        return
    activate()


if __name__ == "sitecustomize":
    try:
        _chain()
    finally:  # an error in the shadowed sitecustomize is reported by site.py as usual, after this
        _activate()
