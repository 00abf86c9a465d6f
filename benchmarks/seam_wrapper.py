"""What a wrapt wrapper would cost on the shim's seams, against the plain functions they use now.

The seams (``instrumentation/instrumentor.py``) replace six class attributes with plain functions that call
the original. wrapt's ``wrap_function_wrapper``, as the OpenTelemetry instrumentations use it, puts a
``FunctionWrapper`` there instead: each attribute access builds a ``BoundFunctionWrapper`` and each call
goes through it to the wrapper with ``(wrapped, instance, args, kwargs)``. Both wrappers here do nothing but
call the original, so the difference is the mechanism alone, per call of a patched method.

Rounds interleave the three configurations (bare method, plain function, wrapt), each first in turn, and
a figure is the median over rounds of (configuration - bare) within the round, so the machine's other
load hits all alike.

    .venv/bin/python benchmarks/seam_wrapper.py [--rounds 15] [--calls 200000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import wrapt


def _classes() -> dict[str, type]:
    def make() -> type:
        class Client:
            def request(self, cast_to: object, options: object, *, stream: bool = False) -> object:
                return options

        return Client

    bare, plain, wrapped = make(), make(), make()
    original = plain.request

    def request(self: Any, *args: Any, **kwargs: Any) -> Any:  # the shape of the shim's seams
        return original(self, *args, **kwargs)

    plain.request = request  # type: ignore[attr-defined]
    wrapt.wrap_function_wrapper(wrapped, "request", lambda fn, _instance, args, kwargs: fn(*args, **kwargs))
    return {"bare": bare, "plain function (now)": plain, "wrapt FunctionWrapper": wrapped}


def _time(cls: type, calls: int) -> float:
    client: Callable[..., object] = cls().request
    options = object()
    started = time.perf_counter()
    for _ in range(calls):
        client(None, options, stream=False)
    return (time.perf_counter() - started) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args(argv)
    classes = _classes()
    added: dict[str, list[float]] = {name: [] for name in classes if name != "bare"}
    bare_times = []
    names = list(classes)
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]  # each goes first in turn
        seconds = {name: _time(classes[name], args.calls) for name in order}
        bare_times.append(seconds["bare"])
        for name, deltas in added.items():
            deltas.append(seconds[name] - seconds["bare"])
    base = statistics.median(bare_times)
    python = sys.version.split()[0]
    print(f"wrapt {wrapt.__version__}, Python {python}; {args.rounds} rounds x {args.calls} calls")
    print(f"  {'bare method call':<24} {base * 1e9:7.1f} ns")
    for name, deltas in added.items():
        print(f"  {name:<24} +{statistics.median(deltas) * 1e9:6.1f} ns per call")
    plain, wrapped = (statistics.median(d) for d in added.values())
    print(f"  wrapt / plain function: {wrapped / plain:.1f}x the added cost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
