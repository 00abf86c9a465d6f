"""Instructions each configuration adds per request, counted by valgrind (callgrind): this shim, its
multiprocess mode, a pass-through wrapper and the peers, in one run, beside the bare SDK.

What runs. The real anthropic SDK (its default HTTP client, so keep-alive) talks HTTP to a fake Anthropic
API on 127.0.0.1: a threaded server in a process of its own, not under valgrind, whose two replies
(overhead.py's message, and its 50-event stream) are encoded once at start-up and sent in one write each,
so the client never sees a reply trickle in. Each configuration runs in one worker process under
callgrind, set up by ``peers.set_up`` (the same code as peers.py's, imported from it), which also reads
back what it recorded: one request and one stream are checked before counting, and a configuration that
should record and recorded nothing (or did not start) is flagged in the table and fails the run.

What is counted. The worker starts with callgrind's instrumentation off (``--instr-atstart=no``: imports
and set-up run at a few times native speed instead of 50x), makes its check and warm-up requests, then
turns instrumentation on with a valgrind client request and counts four segments: N non-streaming requests
twice, then S streams twice. Each segment starts after a ``gc.collect()`` with the counters zeroed and
ends with a dump (both client requests), so it holds exactly its requests, every thread included (an
OpenTelemetry batch processor's too: the tracer and logger providers are flushed at the end of each
segment, inside it, so each segment pays for handling its own spans and log records; exporting them to
a collector is not counted, nor is reading metrics, ours or theirs, which happens at scrape time). The
client requests are made from Python through five x86-64 instructions that valgrind.h's macros expand to,
in an executable page called with ctypes; outside valgrind they do nothing, so the worker checks
RUNNING_ON_VALGRIND first.

Excluding glibc malloc. Python's small objects come from its own allocator (counted); larger blocks, and
the Rust and C extensions' allocations, go to glibc malloc, whose cost depends on the heap's history
(consolidation, trimming) more than on the code under test. Each dump is read call edge by call edge:
the inclusive cost of every call from a function outside glibc's allocator (``malloc``, ``free``,
``realloc``, ``calloc``, ``memalign`` and friends, by name) into one inside it is subtracted from the
segment's total. Counting edges from outside, rather than adding up each allocator function's inclusive
cost as ``callgrind_annotate --inclusive=yes`` lists it, counts a nested call (were ``realloc`` to call
``malloc``) once.

The figures. Per request: the mean of a case's two segments over N (streams: over S); "±" is half the
difference between the two segments, per request: the method's noise in this run (the added cost's ± is
the configuration's plus the bare SDK's). Added: the configuration minus the bare SDK. Workers run two
at a time (``--jobs``); instruction counts do not depend on what else the machine does.

    make bench-instructions           # project venv: bare, ours, ours-mp, passthrough
    make bench-instructions-peers     # benchmarks/.venv-peers: the full table with the peers
    python benchmarks/instructions.py [--configs bare,ours,...] [--requests 200] [--streams 50]
                                      [--json FILE] [--markdown] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import mmap
import os
import platform
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # peers.py and overhead.py, also when imported from the tests

import peers  # noqa: E402 (after the path; peers imports only the standard library at its top)

CASES = ("non-streaming", "50-event stream")
SEGMENT = {"non-streaming": "plain", "50-event stream": "stream"}  # dump labels: no spaces
# The table's order. bare is the baseline; bare and passthrough record nothing by design.
CONFIGS = ("bare", "ours", "ours-mp", "passthrough", "otel-metrics", "otel-traces", "sdk-spans", "openlit")
SILENT = ("bare", "passthrough")
PEERS = ("otel-metrics", "otel-traces", "sdk-spans", "openlit")
# Heaviest first, so two workers at a time finish together.
ORDER = ("openlit", "otel-traces", "otel-metrics", "sdk-spans", "ours-mp", "ours", "passthrough", "bare")
WARMUP = 200  # requests (streams: a quarter), uninstrumented, before counting: lazy imports, caches, series,
# and the interpreter's specialisation of the hot code (fewer left a first segment ~4K per request dearer)
MODEL = "claude-sonnet-5-5"  # overhead.MODEL, which the fake answers with (not imported: anthropic is slow)

TARGETS = {"ours plain": 25_000, "ours stream": 60_000, "mp ratio": 2.0, "otel metrics": 4.0, "tokens": 32.0}

# ------------------------------------------------------------------------------------- client requests


class Valgrind:
    """Valgrind client requests from Python, without a compiler.

    valgrind.h's ``VALGRIND_DO_CLIENT_REQUEST`` on x86-64 is a preamble of four rotations of %rdi that
    add up to 128 bits (a no-op), then ``xchg %rbx,%rbx``: valgrind recognises the sequence and answers
    the request whose six words %rax points at, in %rdx. Natively %rdx keeps the default, 0. Here the
    sequence is a function ``size_t f(size_t *args)`` in an executable page.
    """

    RUNNING_ON_VALGRIND = 0x1001
    _CALLGRIND = (ord("C") << 24) | (ord("T") << 16)  # VG_USERREQ_TOOL_BASE('C', 'T'), callgrind.h
    ZERO_STATS = _CALLGRIND + 1
    DUMP_STATS_AT = _CALLGRIND + 3
    START_INSTRUMENTATION = _CALLGRIND + 4
    STOP_INSTRUMENTATION = _CALLGRIND + 5
    _CODE = bytes.fromhex(
        "53"  # push %rbx
        "4889f8"  # mov %rdi,%rax: the request's words
        "31d2"  # xor %edx,%edx: the default answer
        "48c1c703"
        "48c1c70d"
        "48c1c73d"
        "48c1c733"  # rol $3, $13, $61, $51, %rdi
        "4887db"  # xchg %rbx,%rbx: the request
        "4889d0"  # mov %rdx,%rax
        "5b"  # pop %rbx
        "c3"  # ret
    )

    def __init__(self) -> None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            raise RuntimeError(f"the client requests are x86-64 code; this is {platform.machine()}")
        prot = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=prot)
        self._page.write(self._CODE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self._call = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p)(address)

    def request(self, code: int, arg: int = 0) -> int:
        words = (ctypes.c_size_t * 6)(code, arg, 0, 0, 0, 0)
        return int(self._call(ctypes.addressof(words)))

    def running(self) -> bool:
        return self.request(self.RUNNING_ON_VALGRIND) > 0

    def dump(self, label: str) -> None:
        text = ctypes.create_string_buffer(label.encode())
        self.request(self.DUMP_STATS_AT, ctypes.addressof(text))


# ------------------------------------------------------------------------------------------ fake API


def _http_reply(body: bytes, content_type: str) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
    return (head + "request-id: req_bench\r\n\r\n").encode() + body


def serve(listening: int) -> None:
    """The fake API on the listening socket it inherits (file descriptor ``listening``)."""
    from overhead import MESSAGE, stream_body

    replies = {
        False: _http_reply(json.dumps(MESSAGE).encode(), "application/json"),
        True: _http_reply(stream_body(), "text/event-stream; charset=utf-8"),
    }

    class Handler(socketserver.StreamRequestHandler):
        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def handle(self) -> None:
            while self.rfile.readline():  # the request line; b"" once the client closes the connection
                length = 0
                while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = json.loads(self.rfile.read(length) or b"{}")
                # wbufsize 0: one sendall of the whole reply.
                self.wfile.write(replies[body.get("stream") is True])

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True

    with Server(("127.0.0.1", 0), Handler, bind_and_activate=False) as server:
        server.socket.close()
        server.socket = socket.socket(fileno=listening)
        server.serve_forever()  # until the orchestrator terminates it


@contextlib.contextmanager
def fake_api() -> Iterator[int]:
    """The fake API's port. The socket listens before the server process has started (it imports
    anthropic, for overhead.py's replies), so the workers need not wait for it: their first connection
    waits in the backlog."""
    listening = socket.create_server(("127.0.0.1", 0), backlog=16)
    port = int(listening.getsockname()[1])
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", str(listening.fileno())],
        pass_fds=(listening.fileno(),),
    )
    listening.close()
    try:
        yield port
    finally:
        server.terminate()  # it may still be importing, if no worker got as far as a request
        server.wait()


# --------------------------------------------------------------------------------------------- worker


def _telemetry_flush() -> Callable[[], None]:
    """Flush the global tracer and logger providers' batch processors, if the configuration has any."""
    try:
        from opentelemetry import _logs, trace
    except ImportError:
        return lambda: None
    providers = (trace.get_tracer_provider(), _logs.get_logger_provider())
    # The SDK's providers have force_flush; the API's default (no-op, proxy) ones do not.
    flushes = [getattr(p, "force_flush", None) for p in providers]

    def flush() -> None:
        for f in flushes:
            if callable(f):
                f()

    return flush


def worker(name: str, port: int, requests: int, streams: int, result: Path) -> None:
    started = time.monotonic()
    report: dict[str, Any] = {"versions": peers._versions(peers.CONFIGS[name].packages)}

    def finish(**fields: Any) -> None:
        report.update(fields)
        result.write_text(json.dumps(report))

    valgrind = Valgrind()
    if not valgrind.running():
        finish(error="not running under valgrind: nothing would be counted", started=False)
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            evidence = peers.set_up(name, Path(tmp))
        except Exception as exc:  # a peer missing or broken: say so, count nothing
            finish(error=f"{type(exc).__name__}: {exc}", started=False)
            return
        import anthropic

        client = anthropic.Anthropic(api_key="bench", base_url=f"http://127.0.0.1:{port}", max_retries=0)
        kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 64}
        kwargs["messages"] = [{"role": "user", "content": "hi"}]

        def plain() -> object:
            return client.messages.create(**kwargs)

        def streamed() -> object:
            return sum(1 for _ in client.messages.create(stream=True, **kwargs))

        cases = {"non-streaming": (plain, requests), "50-event stream": (streamed, streams)}
        recorded = {}
        for case, (fn, _) in cases.items():
            before = evidence.snapshot()
            fn()
            recorded[case] = peers._delta(evidence.snapshot(), before)
        for _ in range(WARMUP):
            plain()
        for _ in range(WARMUP // 4):
            streamed()
        flush = _telemetry_flush()
        before = evidence.snapshot()
        ready = time.monotonic()
        valgrind.request(Valgrind.START_INSTRUMENTATION)
        for case, (fn, n) in cases.items():
            for half in (1, 2):
                gc.collect()  # each segment starts from the same heap; collections inside it count
                # httpx closes a connection idle for 5 s, and under callgrind that collection (or the
                # previous segment's flush) can take as long: use it now, so the segment opens none.
                fn()
                valgrind.request(Valgrind.ZERO_STATS)
                for _ in range(n):
                    fn()
                flush()
                valgrind.dump(f"{SEGMENT[case]}-{half}")
        valgrind.request(Valgrind.STOP_INSTRUMENTATION)
        counted = time.monotonic() - ready
        exporter = sys.modules.get("claude_exporter")
        finish(
            recorded=recorded,
            recorded_counted=peers._delta(evidence.snapshot(), before),
            claude_exporter=str(Path(exporter.__file__ or "").parent) if exporter else None,
            python=platform.python_version(),
            seconds_to_ready=round(ready - started, 1),
            seconds_counted=round(counted, 1),
        )


# --------------------------------------------------------------------------------- callgrind's output

# glibc's allocator: its entry points and (should one be called from outside) its internals.
MALLOC = frozenset((
    "malloc", "free", "realloc", "calloc", "memalign", "posix_memalign", "aligned_alloc", "valloc",
    "pvalloc", "reallocarray", "cfree", "malloc_trim", "malloc_usable_size", "__libc_malloc", "__libc_free",
    "__libc_realloc", "__libc_calloc", "__libc_memalign", "__libc_valloc", "__libc_pvalloc",
    "__posix_memalign", "_int_malloc", "_int_free", "_int_realloc", "_int_memalign", "malloc_consolidate",
    "sysmalloc", "systrim", "tcache_init", "ptmalloc_init",
))  # fmt: skip


SOCKETS = ("connect", "recv", "send")


@dataclass(frozen=True)
class Dump:
    label: str
    instructions: int  # every instruction in the segment
    malloc: int  # of which in glibc's allocator (inclusive, from outside it)
    # Calls to libc's connect, recv and send: the method's own check. With keep-alive a segment opens no
    # connection; with replies sent in one write, a non-streaming request takes one recv.
    sockets: dict[str, int] = field(default_factory=dict)

    @property
    def counted(self) -> int:
        return self.instructions - self.malloc


def read_dump(path: Path) -> Dump:
    """One callgrind dump: its label, total Ir, the Ir of calls into glibc's allocator from outside it,
    and how many calls went to the socket functions in SOCKETS.

    The format (callgrind's docs, "Callgrind Format Specification"): ``fn=`` names the function the
    following cost lines belong to, ``cfn=`` then ``calls=`` announce a call whose inclusive cost is on the
    next cost line; other cost lines are self cost. Names are compressed to ``(id)`` after first use, and
    ``'2`` marks a recursion level.
    """
    names: dict[str, str] = {}

    def resolve(spec: str) -> str:
        match = re.match(r"\((\d+)\)(?: (.*))?$", spec)
        if match is None:
            return spec.split("'", maxsplit=1)[0]
        if match.group(2) is not None:
            names[match.group(1)] = match.group(2)
        return names[match.group(1)].split("'")[0]

    label, positions, event = "", 1, 0
    caller = callee = ""
    in_call = False
    total = malloc = 0
    sockets = dict.fromkeys(SOCKETS, 0)
    with path.open() as lines:
        for line in lines:
            first = line[:1]
            if first.isdigit() or first in "+-*":
                fields = line.split()
                cost = int(fields[positions + event]) if len(fields) > positions + event else 0
                if in_call:
                    in_call = False
                    if callee in MALLOC and caller not in MALLOC:
                        malloc += cost
                else:
                    total += cost
            elif line.startswith("fn="):
                caller = resolve(line[3:].rstrip("\n"))
            elif line.startswith("cfn="):
                callee = resolve(line[4:].rstrip("\n"))
            elif line.startswith("calls="):
                in_call = True
                if callee in SOCKETS and caller not in SOCKETS:
                    sockets[callee] += int(line[6:].split()[0])
            elif line.startswith("desc: Trigger: Client Request: "):
                label = line.removeprefix("desc: Trigger: Client Request: ").strip()
            elif line.startswith("positions:"):
                positions = len(line.split()) - 1
            elif line.startswith("events:"):
                event = line.split()[1:].index("Ir")
    return Dump(label, total, malloc, sockets)


# --------------------------------------------------------------------------------------- orchestrator


def measure(name: str, python: str, port: int, requests: int, streams: int, workdir: Path) -> dict[str, Any]:
    """Run one configuration's worker under callgrind; its report and its four dumps."""
    out = workdir / f"{name}.callgrind"
    result = workdir / f"{name}.json"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        f"--log-file={workdir / name}.valgrind.log",
        python,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--port",
        str(port),
        "--requests",
        str(requests),
        "--streams",
        str(streams),
        "--result",
        str(result),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONHASHSEED"] = "0"  # the same string hashes, so the same dict and set layouts, in every run
    started = time.monotonic()
    with (workdir / f"{name}.out").open("w") as log:
        run = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.monotonic() - started
    if not result.exists():
        tail = (workdir / f"{name}.out").read_text()[-2000:]
        return {"error": f"the worker exited {run.returncode} without a report: {tail}", "seconds": seconds}
    report: dict[str, Any] = json.loads(result.read_text())
    report["seconds"] = seconds
    if report.get("error"):
        return report
    dumps = {d.label: d for d in map(read_dump, sorted(workdir.glob(f"{name}.callgrind.*")))}
    report["segments"] = {}
    for case in CASES:
        found = [dumps.get(f"{SEGMENT[case]}-{half}") for half in (1, 2)]
        if None in found:
            return {**report, "error": f"callgrind wrote no dump for {case} (found {sorted(dumps)})"}
        report["segments"][case] = [
            {"instructions": d.instructions, "malloc": d.malloc, "sockets": d.sockets}
            for d in found
            if d is not None
        ]
        connects = sum(d.sockets["connect"] for d in found if d is not None)
        if connects:  # the figure would hold connection set-ups: say so rather than print it as a request's
            report["error"] = f"{connects} connections opened while counting {case}: keep-alive did not hold"
    return report


def summarise(reports: dict[str, dict[str, Any]], requests: int, streams: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, report in reports.items():
        per = {"non-streaming": requests, "50-event stream": streams}
        row: dict[str, Any] = {
            "title": peers.CONFIGS[name].title,
            "error": report.get("error"),
            "started": report.get("started", True),
            "versions": report.get("versions", {}),
            "recorded": report.get("recorded", {}),
            "recorded_counted": report.get("recorded_counted", {}),
            "claude_exporter": report.get("claude_exporter"),
            "seconds": round(report.get("seconds", 0.0), 1),
            "cases": {},
        }
        row["recorded_nothing"] = not row["error"] and not any(
            value > 0 for case in row["recorded"].values() for value in case.values()
        )
        row["flagged"] = bool(row["error"]) or (row["recorded_nothing"] and name not in SILENT)
        for case, segments in report.get("segments", {}).items():
            a, b = (s["instructions"] - s["malloc"] for s in segments)
            row["cases"][case] = {
                "per_request": (a + b) / 2 / per[case],
                "noise": abs(a - b) / 2 / per[case],
                "malloc_per_request": sum(s["malloc"] for s in segments) / 2 / per[case],
                "tokens": any(v > 0 for k, v in row["recorded"].get(case, {}).items() if "tokens" in k),
            }
        rows[name] = row
    bare = rows.get("bare", {}).get("cases", {})
    for row in rows.values():
        for case, f in row["cases"].items():
            if case in bare:
                f["added"] = f["per_request"] - bare[case]["per_request"]
                f["added_noise"] = f["noise"] + bare[case]["noise"]
    ours = rows.get("ours", {}).get("cases", {})
    for row in rows.values():
        for case, f in row["cases"].items():
            mine = ours.get(case, {}).get("added")
            f["ratio_to_ours"] = f["added"] / mine if "added" in f and mine and mine > 0 else None
    return rows


def targets(rows: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each pass, missed, or not measured (with why)."""

    def added(name: str, case: str) -> float | None:
        value = rows.get(name, {}).get("cases", {}).get(case, {}).get("added")
        return None if value is None else float(value)

    out: list[dict[str, Any]] = []

    def target(kind: str, text: str, value: float | None, ok: bool | None, why: str = "") -> None:
        verdict = "not measured" if ok is None else "pass" if ok else "missed"
        out.append({"kind": kind, "target": text, "value": value, "verdict": verdict, "why": why})

    for case, limit in (
        ("non-streaming", TARGETS["ours plain"]),
        ("50-event stream", TARGETS["ours stream"]),
    ):
        unit = "request" if case == "non-streaming" else "50-event stream"
        ours = added("ours", case)
        text = f"ours adds at most {limit:,} instructions per {unit}"
        why = "" if ours is not None else "ours did not run"
        target("ours", text, ours, None if ours is None else ours <= limit, why)
    for case in CASES:
        ours, mp = added("ours", case), added("ours-mp", case)
        ratio = mp / ours if ours and mp is not None and ours > 0 else None
        text = f"multiprocess mode adds at most {TARGETS['mp ratio']:g}x ours ({case})"
        why = "" if ratio is not None else "ours or ours-mp did not run, or ours added nothing"
        target("mp", text, ratio, None if ratio is None else ratio <= TARGETS["mp ratio"], why)
    for case in CASES:
        ours, otel = added("ours", case), added("otel-metrics", case)
        ratio = otel / ours if ours and otel is not None and ours > 0 else None
        text = f"ours at least {TARGETS['otel metrics']:g}x cheaper than OTel metrics-only ({case})"
        why = "" if ratio is not None else "otel-metrics did not run"
        target("peers", text, ratio, None if ratio is None else ratio >= TARGETS["otel metrics"], why)
    for case in CASES:
        ours = added("ours", case)
        tokens = {
            name: added(name, case)
            for name in PEERS
            if rows.get(name, {}).get("cases", {}).get(case, {}).get("tokens")
        }
        known = {name: value for name, value in tokens.items() if value is not None}
        text = (
            f"ours at least {TARGETS['tokens']:g}x cheaper than the cheapest peer recording tokens ({case})"
        )
        if not known or not ours or ours <= 0:
            why = "no peer recording tokens ran" if not known else "ours did not run"
            target("peers", text, None, None, why)
            continue
        cheapest = min(known, key=lambda name: known[name])
        ratio = known[cheapest] / ours
        target("peers", f"{text}: {cheapest}", ratio, ratio >= TARGETS["tokens"])
    return out


def _n(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+,.0f}" if sign else f"{value:,.0f}"


def _recorded(row: dict[str, Any]) -> str:
    if row["error"]:
        return f"{'failed' if row['started'] else 'did not start'}: {row['error']}"
    texts = [peers._recorded_text(row, case) for case in CASES]
    text = texts[0] if texts[0] == texts[1] else f"{texts[0]}; stream: {texts[1]}"
    return text + (" (RECORDED NOTHING)" if row["flagged"] else "")


def cells(rows: dict[str, Any], names: list[str]) -> list[list[str]]:
    """The table: a header, then a row per configuration: per request (±), added (±), ratio to ours."""
    head = ["configuration"]
    for case in CASES:
        unit = "request" if case == "non-streaming" else "stream"
        head += [f"{case}, per {unit}", "added", "ratio to ours"]
    out = [[*head, "recorded (request; stream)"]]
    for name in names:
        row = rows[name]
        line = [row["title"]]
        for case in CASES:
            f = row["cases"].get(case)
            if f is None:
                line += ["-", "-", "-"]
                continue
            added = "" if name == "bare" else f"{_n(f.get('added'), sign=True)} ± {_n(f.get('added_noise'))}"
            ratio = f.get("ratio_to_ours")
            line += [
                f"{_n(f['per_request'])} ± {_n(f['noise'])}",
                added,
                "" if ratio is None else f"{ratio:.1f}x",
            ]
        out.append([*line, _recorded(row)])
    return out


def _markdown_table(table: list[list[str]]) -> list[str]:
    head, *body = table
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    return lines + ["| " + " | ".join(line) + " |" for line in body]


def _text_table(table: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return [
        "  ".join(
            c.ljust(w) if i in (0, len(line) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]


def _targets(result: dict[str, Any], which: tuple[str, ...]) -> list[str]:
    out = []
    for t in result["targets"]:
        if t["kind"] not in which:
            continue
        value = t["value"]
        shown = "-" if value is None else f"{value:,.0f}" if t["kind"] == "ours" else f"{value:.1f}x"
        tail = f" ({t['why']})" if t["why"] else ""
        out.append(f"- {t['target']}: {shown}, **{t['verdict']}**{tail}")
    return out


def _footnote(result: dict[str, Any], names: list[str]) -> str:
    rows, m = result["rows"], result["machine"]
    versions: dict[str, str] = {}
    for name in names:
        versions.update(rows[name]["versions"])
    bare = rows.get("bare", {}).get("cases", {})
    malloc = ", ".join(f"{_n(f['malloc_per_request'])} per {case}" for case, f in bare.items())
    return (
        "Instructions excluding glibc malloc"
        + (
            f" (the bare SDK spends {malloc} in it)"
            if malloc
            else " (no bare SDK in this run: nothing added)"
        )
        + "; ± is half the difference "
        f"between two segments of {result['requests']} requests, or {result['streams']} streams. "
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ". "
        f"Python {m['python']}, valgrind {m['valgrind']}, {m['cpu']}; {m['date']}, commit {m['commit']}; "
        f"{result['jobs']} workers at a time, {m['minutes']:.1f} minutes."
    )


# The sections of docs/benchmarks.md that --markdown prints and --write-doc replaces, between these lines.
MARK = (
    "<!-- benchmarks/instructions.py {part}: generated, `make bench-instructions-peers ARGS=--write-doc` -->"
)
END = "<!-- end of benchmarks/instructions.py {part} -->"
DOC = HERE.parent / "docs" / "benchmarks.md"


def sections(result: dict[str, Any]) -> dict[str, str]:
    """'ours': the shim beside the bare SDK and a pass-through wrapper; 'peers': with the peers' rows."""
    rows = result["rows"]
    out = {}
    ours = [n for n in rows if n not in PEERS]
    lines = [*_markdown_table(cells(rows, ours)), "", *_targets(result, ("ours", "mp"))]
    out["ours"] = "\n".join([*lines, "", _footnote(result, ours)])
    ran = [n for n in PEERS if n in rows]
    if ran:
        names = [n for n in ("bare", "ours") if n in rows] + ran
        lines = [*_markdown_table(cells(rows, names)), "", *_targets(result, ("peers",))]
        out["peers"] = "\n".join([*lines, "", _footnote(result, names)])
    return out


def markdown(result: dict[str, Any]) -> str:
    parts = sections(result)
    return "\n\n".join(f"{MARK.format(part=p)}\n{text}\n{END.format(part=p)}" for p, text in parts.items())


def write_doc(result: dict[str, Any], doc: Path = DOC) -> list[str]:
    """Replace the marked sections of the doc with this run's; the parts written."""
    text = doc.read_text(encoding="utf-8")
    written = []
    for part, body in sections(result).items():
        mark, end = MARK.format(part=part), END.format(part=part)
        if mark not in text or end not in text:
            raise SystemExit(f"{doc}: no lines {mark!r} ... {end!r} to replace")
        before, rest = text.split(mark, 1)
        text = f"{before}{mark}\n{body}\n{end}{rest.split(end, 1)[1]}"
        written.append(part)
    doc.write_text(text, encoding="utf-8")
    return written


def text(result: dict[str, Any]) -> str:
    rows = result["rows"]
    names = list(rows)
    lines = _text_table(cells(rows, names))
    lines += ["", "Targets (issue 17):", *_targets(result, ("ours", "mp", "peers"))]
    return "\n".join([*lines, "", _footnote(result, names)]).replace("**", "")


def _git_commit() -> str:
    run = subprocess.run(
        ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return run.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"of: {', '.join(CONFIGS)}")
    parser.add_argument("--requests", type=int, default=200, help="non-streaming requests per segment")
    parser.add_argument("--streams", type=int, default=50, help="50-event streams per segment")
    parser.add_argument("--jobs", type=int, default=2, help="workers under valgrind at a time")
    parser.add_argument(
        "--python", default=sys.executable, help="the workers' interpreter (default: this one)"
    )
    parser.add_argument("--json", type=Path, help="also write the full result here")
    parser.add_argument("--markdown", action="store_true", help="print the docs/benchmarks.md sections")
    parser.add_argument(
        "--write-doc", action="store_true", help="replace the generated sections of docs/benchmarks.md"
    )
    parser.add_argument("--keep", type=Path, help="keep the callgrind dumps and logs in this directory")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    if args.worker:
        worker(args.worker, args.port, args.requests, args.streams, args.result)
        return 0
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    names = [n for n in CONFIGS if n in names]  # without bare, nothing is "added": set-ups checked only
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (make debs installs it)", file=sys.stderr)
        return 2
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, check=False)
    started = time.monotonic()
    info = {**peers.machine(), "valgrind": version.stdout.strip().removeprefix("valgrind-")}
    info["commit"] = _git_commit()
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="instructions-")))
        port = stack.enter_context(fake_api())

        def one(name: str) -> tuple[str, dict[str, Any]]:
            report = measure(name, args.python, port, args.requests, args.streams, workdir)
            state = f"error: {report['error']}" if report.get("error") else "done"
            print(f"{name}: {state} ({report['seconds']:.0f} s)", file=sys.stderr, flush=True)
            return name, report

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            reports = dict(pool.map(one, sorted(names, key=ORDER.index)))
    info["minutes"] = (time.monotonic() - started) / 60
    rows = summarise({n: reports[n] for n in names}, args.requests, args.streams)
    result = {
        "machine": info,
        "requests": args.requests,
        "streams": args.streams,
        "jobs": args.jobs,
        "rows": rows,
    }
    result["targets"] = targets(rows)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result) if args.markdown else text(result))
    if args.write_doc:
        print(f"{DOC}: wrote {', '.join(write_doc(result))}", file=sys.stderr)
    exporters = {row["claude_exporter"] for row in rows.values() if row["claude_exporter"]}
    checkout = str(HERE.parent / "exporter" / "claude_exporter")
    if exporters - {checkout}:
        print(
            f"note: claude_exporter imported from {', '.join(sorted(exporters))}, not {checkout}",
            file=sys.stderr,
        )
    flagged = [name for name, row in rows.items() if row["flagged"]]
    if flagged:
        print(f"flagged (did not start, or recorded nothing): {', '.join(flagged)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
