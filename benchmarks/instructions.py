"""Instructions each configuration adds per request, counted by valgrind (callgrind): this shim, its
multiprocess mode, a pass-through wrapper and the peers, in one run, beside the bare SDK.

What runs. The real anthropic SDK (its default HTTP client, so keep-alive) talks HTTP to a fake Anthropic
API on 127.0.0.1: a threaded server in a process of its own, not under valgrind, whose two replies
(overhead.py's message, and its 50-event stream) are encoded once at start-up and sent in one write each.
Every configuration is set up by ``peers.set_up`` (peers.py's code, imported), which also reads back what
it recorded: one request and one stream are checked before counting, and a configuration that should
record and recorded nothing, or did not start, is flagged in the table and fails the run (exit 1).

Processes. The bare SDK, ours, ours in multiprocess mode and the pass-through wrapper can be undone in
place (``uninstrument()``, the original method put back), so they take turns in one process: round after
round, each is set up, counted and undone, in a rotating order. A peer cannot be undone (global
providers), so each peer has a process of its own in which the bare SDK is counted first, as its pair.
Every process imports the SDK and makes a few requests before any configuration's code is imported.

What is counted. A worker starts with callgrind's instrumentation off (``--instr-atstart=no``: imports
and warm-up run at a few times native speed instead of 50x), warms every configuration up, then turns
instrumentation on with a valgrind client request. A segment is N non-streaming requests (or S streams)
in one configuration: after a ``gc.collect()`` and one request that keeps the connection fresh (httpx
drops one idle for 5 s), the counters are zeroed, and after the requests the tracer and logger providers
are flushed (so a segment pays for handling its own spans and log records: a batch processor's thread is
counted, all threads are) and the counters dumped, labelled. Exporting telemetry to a collector is not
counted, nor is reading metrics, ours or theirs, which happens at scrape time. The client requests are
the five x86-64 instructions valgrind.h's macros expand to, in an executable page called with ctypes;
outside valgrind they do nothing, so the worker checks RUNNING_ON_VALGRIND first. Each segment's calls
to libc's connect, recv and send are counted too: a segment that opened a connection fails its
configuration (keep-alive did not hold), and one recv per request shows the reply arrived in one piece.

Excluding glibc malloc. Python's small objects come from its own allocator (counted); larger blocks, and
the Rust and C extensions' allocations, go to glibc malloc, whose cost depends on the heap's history
(consolidation, trimming) more than on the code under test. Each dump is read call edge by call edge:
the inclusive cost of every call from a function outside glibc's allocator (``malloc``, ``free``,
``realloc``, ``calloc``, ``memalign`` and friends, by name) into one inside it is subtracted from the
segment's total. That equals the sum of those functions' inclusive costs as ``callgrind_annotate
--inclusive=yes`` lists them (the tests check it), and would still count a nested call once.

The figures. Per request: the mean over a configuration's segments, over N (streams: over S). Added:
the mean over rounds of (configuration - bare SDK) in the same process and round. ± is the standard
error of that mean. What limits it is the interpreter, not the count: CPython's method cache (4096
entries, indexed by a type's version tag and the address of the attribute's name) and its dicts place
entries by layout, and every ``instrument()``, ``uninstrument()`` or patch gives the patched classes new
version tags, so the same code costs more or less from one set-up to the next. A peer, set up once,
varies by 1-3K per request between rounds; ours, set up anew each round, by up to ±30K per request
(the first full run: six rounds, standard error 8K per request and 6K per stream). ``--rounds`` buys
precision as its square root, at about half a minute per round; ``--layouts`` repeats each process with
other string hashes and type tags (see ``layout()``). One process per configuration, the first method
tried, was worse: a pass-through wrapper that does nothing measured from -5K to +9K per request and from
+5K to +69K per stream, depending on the process. Workers run two at a time (``--jobs``); the counts do
not depend on the machine's load, only the run's duration does.

    make bench-instructions           # project venv: bare, ours, ours-mp, passthrough (~3 minutes)
    make bench-instructions-peers     # benchmarks/.venv-peers: the full table with the peers (~12 minutes)
    python benchmarks/instructions.py [--configs bare,ours,...] [--rounds 6] [--requests 40] [--streams 12]
                                      [--json FILE] [--markdown] [--write-doc] [--keep DIR]
    python benchmarks/instructions.py --from-json FILE [--markdown] [--write-doc]   # no run: render
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import mmap
import os
import platform
import re
import shutil
import socket
import socketserver
import statistics
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
# The peers' processes, heaviest first (after the shared process, the longest), so two at a time end together.
ORDER = ("openlit", "otel-traces", "otel-metrics", "sdk-spans")
WARMUP = 200  # requests (streams: a quarter), uninstrumented, before counting: lazy imports, caches, series,
# and the interpreter's specialisation of the hot code (fewer left a first segment ~4K per request dearer)
PREWARM = 5  # requests and streams each, before the configuration is set up (see worker())
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


_LAYOUT: list[object] = []


def layout(number: int) -> None:
    """Layout ``number``: what decides collisions in the interpreter's hash tables, moved before anything
    else is imported. String hashes come from PYTHONHASHSEED (the orchestrator sets it to the number);
    the method cache is indexed by version tags, taken in the order types are first looked up, and by
    names' addresses: N x 64 classes looked up and N x 256 names interned first move both. Layout 0
    changes nothing."""
    for i in range(number * 64):
        cls = type(f"Layout{i}", (), {})
        _ = cls.__name__  # a lookup: the class takes a version tag
        _LAYOUT.append(cls)
    _LAYOUT.extend(sys.intern(f"layout-{number}-{i}") for i in range(number * 256))


REVERSIBLE = ("bare", "ours", "ours-mp", "passthrough")  # undone in place, so they take turns in one process
REWARM = 3  # requests and one stream after each set-up, in no segment: new series, first calls


def worker(modes: list[str], port: int, rounds: int, requests: int, streams: int, result: Path) -> None:
    """Count each of ``modes`` (configurations; bare first) in ``rounds`` rounds of segments, in this one
    process: the reversible ones taking turns round by round, then an irreversible peer's rounds."""
    started = time.monotonic()
    info: dict[str, dict[str, Any]] = {
        m: {"versions": peers._versions(peers.CONFIGS[m].packages)} for m in modes
    }
    report: dict[str, Any] = {"modes": info}

    def finish(**fields: Any) -> None:
        report.update(fields)
        result.write_text(json.dumps(report))

    valgrind = Valgrind()
    if not valgrind.running():
        for mode in modes:
            info[mode].update(error="not running under valgrind: nothing would be counted", started=False)
        finish()
        return
    for mode in modes:
        missing = [
            package for package, version in info[mode]["versions"].items() if version == "not installed"
        ]
        if missing:  # said before the SDK's import, which takes most of a minute under valgrind
            info[mode].update(error=f"not installed: {', '.join(missing)}", started=False)
    modes = [m for m in modes if "error" not in info[m]]
    if modes == ["bare"] and len(info) > 1:  # the bare SDK was there only as the peer's pair
        finish()
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
    # The SDK first, in the same order in every process: its types take their version tags and its names
    # their addresses before any configuration's code is imported.
    for _ in range(PREWARM):
        plain()
        streamed()
    messages = anthropic.resources.messages.Messages
    original_create = messages.__dict__["create"]
    tmp = Path(tempfile.mkdtemp(prefix="instructions-worker-"))
    flush = _telemetry_flush()

    def activate(mode: str, tag: str) -> peers.Evidence | None:
        (tmp / f"{mode}-{tag}").mkdir()
        try:
            evidence = peers.set_up(mode, tmp / f"{mode}-{tag}")
        except Exception as exc:  # a peer broken: say so, count nothing
            info[mode].update(error=f"{type(exc).__name__}: {exc}", started=False)
            return None
        nonlocal flush
        flush = _telemetry_flush()  # a peer may have set global providers
        return evidence

    def deactivate(mode: str) -> None:
        if mode in ("ours", "ours-mp"):
            import claude_exporter

            claude_exporter.uninstrument()
        elif mode == "passthrough":
            setattr(messages, "create", original_create)  # noqa: B010 (what the wrapper replaced)

    def warm(mode: str, evidence: peers.Evidence) -> None:
        """Uninstrumented: what one request and one stream record, then the warm-up."""
        recorded = {}
        for case, (fn, _) in cases.items():
            before = evidence.snapshot()
            fn()
            recorded[case] = peers._delta(evidence.snapshot(), before)
        info[mode]["recorded"] = recorded
        for _ in range(WARMUP):
            plain()
        for _ in range(WARMUP // 4):
            streamed()

    def count(mode: str, evidence: peers.Evidence, round_: int) -> None:
        for _ in range(REWARM):
            plain()
        streamed()
        before = evidence.snapshot()
        for case, (fn, n) in cases.items():
            gc.collect()  # each segment starts from the same heap; collections inside it count
            # httpx closes a connection idle for 5 s, and under callgrind that collection (or the
            # previous segment's flush) can take as long: use it now, so the segment opens none.
            fn()
            valgrind.request(Valgrind.ZERO_STATS)
            for _ in range(n):
                fn()
            flush()
            valgrind.dump(f"{mode}:{SEGMENT[case]}:{round_}")
        counted = info[mode].setdefault("recorded_counted", {})
        for key, value in peers._delta(evidence.snapshot(), before).items():
            counted[key] = counted.get(key, 0.0) + value

    try:
        reversible = [m for m in modes if m in REVERSIBLE]
        for mode in reversible:  # every code path warm before anything is counted
            evidence = activate(mode, "warm")
            if evidence is not None:
                warm(mode, evidence)
                deactivate(mode)
        reversible = [m for m in reversible if "error" not in info[m]]
        ready = time.monotonic()
        valgrind.request(Valgrind.START_INSTRUMENTATION)
        for round_ in range(rounds):
            shift = round_ % max(1, len(reversible))  # each takes every place in the order in turn
            for mode in reversible[shift:] + reversible[:shift]:
                evidence = activate(mode, str(round_))
                if evidence is not None:
                    count(mode, evidence, round_)
                    deactivate(mode)
        valgrind.request(Valgrind.STOP_INSTRUMENTATION)
        for mode in (m for m in modes if m not in REVERSIBLE):  # a peer: set up once, for good
            evidence = activate(mode, "all")
            if evidence is None:
                continue
            warm(mode, evidence)
            valgrind.request(Valgrind.START_INSTRUMENTATION)
            for round_ in range(rounds):
                count(mode, evidence, round_)
            valgrind.request(Valgrind.STOP_INSTRUMENTATION)
        exporter = sys.modules.get("claude_exporter")
        finish(
            claude_exporter=str(Path(exporter.__file__ or "").parent) if exporter else None,
            python=platform.python_version(),
            seconds_to_ready=round(ready - started, 1),
            seconds_counted=round(time.monotonic() - ready, 1),
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def measure(
    modes: list[str], layout: int, python: str, port: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Run one worker under callgrind in one layout: its report, each mode's segments read from its dumps."""
    stem = workdir / f"{'+'.join(modes)}.{layout}"
    out, result, log_file = (stem.with_name(f"{stem.name}.{ext}") for ext in ("callgrind", "json", "out"))
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        f"--log-file={stem}.valgrind.log",
        python,
        str(Path(__file__).resolve()),
        "--worker",
        ",".join(modes),
        "--layout",
        str(layout),
        "--port",
        str(port),
        "--rounds",
        str(args.rounds),
        "--requests",
        str(args.requests),
        "--streams",
        str(args.streams),
        "--result",
        str(result),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONHASHSEED"] = str(layout)  # see layout()
    started = time.monotonic()
    with log_file.open("w") as log:
        run = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.monotonic() - started
    if not result.exists():
        error = f"the worker exited {run.returncode} without a report: {log_file.read_text()[-2000:]}"
        return {"modes": {m: {"error": error} for m in modes}, "seconds": seconds}
    report: dict[str, Any] = json.loads(result.read_text())
    report["seconds"] = seconds
    for dump in map(read_dump, sorted(workdir.glob(f"{out.name}.*"))):
        mode, kind, round_ = dump.label.split(":")
        case = next(c for c in CASES if SEGMENT[c] == kind)
        got = report["modes"][mode]
        got.setdefault("segments", {}).setdefault(case, []).append(
            {
                "round": int(round_),
                "instructions": dump.instructions,
                "malloc": dump.malloc,
                "sockets": dump.sockets,
            }
        )
        if dump.sockets["connect"]:  # the figure would hold a connection's set-up: say so, not print it
            got["error"] = f"a segment of {case} opened a connection: keep-alive did not hold"
    for got in report["modes"].values():
        found = {c: len(got.get("segments", {}).get(c, ())) for c in CASES}
        if "error" not in got and any(n != args.rounds for n in found.values()):
            got["error"] = f"callgrind wrote {found} segments, not {args.rounds} of each"
    return report


def _standard_error(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def summarise(
    processes: list[dict[str, Any]], names: list[str], requests: int, streams: int
) -> dict[str, Any]:
    """Each configuration's figures from the workers' reports (every layout's).

    Per request: the mean over the configuration's segments. Added: the mean over rounds of
    (configuration - bare SDK) in the same process and round, both sides in one layout; ± is the
    standard error of that mean (in the bare SDK's own row: of its segments' mean).
    """
    per = {"non-streaming": requests, "50-event stream": streams}
    rows: dict[str, Any] = {}

    def figures(got: dict[str, Any], case: str) -> dict[int, float]:
        return {s["round"]: (s["instructions"] - s["malloc"]) / per[case] for s in got["segments"][case]}

    for name in names:
        held = [p for p in processes if name in p["modes"]]
        if name == "bare":  # its row is the shared process's; in a peer's process it is only the pair
            held = [p for p in held if not set(p["modes"]) - set(REVERSIBLE)] or held[:1]
        got = [p["modes"][name] for p in held]
        failed = next((g for g in got if g.get("error")), None)
        first = got[0] if got else {}
        row: dict[str, Any] = {
            "title": peers.CONFIGS[name].title,
            "error": failed.get("error") if failed else (None if got else "not run"),
            "started": failed.get("started", True) if failed else True,
            "versions": first.get("versions", {}),
            "recorded": first.get("recorded", {}),
            "recorded_counted": [g.get("recorded_counted", {}) for g in got],
            "claude_exporter": next((p["claude_exporter"] for p in held if p.get("claude_exporter")), None),
            "seconds": [round(p.get("seconds", 0.0), 1) for p in held],
            "cases": {},
        }
        row["recorded_nothing"] = not row["error"] and not any(
            value > 0 for case in row["recorded"].values() for value in case.values()
        )
        row["flagged"] = bool(row["error"]) or (row["recorded_nothing"] and name not in SILENT)
        for case in CASES if not row["error"] else ():
            mine: list[float] = []
            paired: list[float] = []
            for process, g in zip(held, got, strict=True):
                own = figures(g, case)
                mine += own.values()
                bare = process["modes"].get("bare", {})
                if name != "bare" and "segments" in bare and not bare.get("error"):
                    base = figures(bare, case)
                    paired += [own[r] - base[r] for r in own if r in base]
            malloc = [s["malloc"] / per[case] for g in got for s in g["segments"][case]]
            f: dict[str, Any] = {
                "segments": mine,
                "per_request": sum(mine) / len(mine),
                "noise": _standard_error(mine),
                "spread": (max(mine) - min(mine)) / 2,
                "malloc_per_request": sum(malloc) / len(malloc),
                "tokens": any(v > 0 for k, v in row["recorded"].get(case, {}).items() if "tokens" in k),
            }
            if paired:
                f.update(added_rounds=paired, added=sum(paired) / len(paired))
                f["added_noise"] = _standard_error(paired)
                f["added_spread"] = (max(paired) - min(paired)) / 2
            row["cases"][case] = f
        rows[name] = row
    ours = rows.get("ours", {}).get("cases", {})
    for row in rows.values():
        for case, f in row["cases"].items():
            base = ours.get(case, {}).get("added")
            f["ratio_to_ours"] = f["added"] / base if "added" in f and base and base > 0 else None
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
            added = f"{_n(f['added'], sign=True)} ± {_n(f['added_noise'])}" if "added" in f else "-"
            added = "" if name == "bare" else added
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
        + f". Each figure is the mean of {result['rounds']} segments of {result['requests']} requests (or "
        f"{result['streams']} streams) per configuration and case"
        + (f", in each of {result['layouts']} layouts" if result.get("layouts", 1) > 1 else "")
        + "; added: the mean of per-round differences from the bare SDK in the same process (a peer's "
        "process counts the bare SDK first, as its pair); ± is the standard error of the mean. "
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
    parser.add_argument("--requests", type=int, default=40, help="non-streaming requests per segment")
    parser.add_argument("--streams", type=int, default=12, help="50-event streams per segment")
    parser.add_argument("--rounds", type=int, default=6, help="segments per configuration and case")
    parser.add_argument("--layouts", type=int, default=1, help="each process again, in another layout")
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
    parser.add_argument("--from-json", type=Path, help="no run: print (or --write-doc) a saved --json result")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--layout", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    if args.worker:
        layout(args.layout)
        worker(args.worker.split(","), args.port, args.rounds, args.requests, args.streams, args.result)
        return 0
    if args.from_json:
        return report(json.loads(args.from_json.read_text()), args)
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

        def one(job: tuple[list[str], int]) -> dict[str, Any]:
            modes, number = job
            report = measure(modes, number, args.python, port, args, workdir)
            errors = [f"{m}: {got['error']}" for m, got in report["modes"].items() if got.get("error")]
            state = "; ".join(errors) or "done"
            print(f"{'+'.join(modes)}, layout {number}: {state} ({report['seconds']:.0f} s)", file=sys.stderr)
            return report

        # One process for the bare SDK and the configurations that can be undone, taking turns; one per
        # peer, which cannot be, with the bare SDK counted first in it as its pair. Longest first.
        group = [n for n in REVERSIBLE if n in names or n == "bare"]
        processes = [["bare", n] for n in ORDER if n in names and n not in REVERSIBLE]
        if len(group) > 1 or "bare" in names:
            processes.insert(0, group)
        jobs = [(modes, k) for k in range(args.layouts) for modes in processes]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            reports = list(pool.map(one, jobs))
    info["minutes"] = (time.monotonic() - started) / 60
    rows = summarise(reports, names, args.requests, args.streams)
    result = {
        "machine": info,
        "requests": args.requests,
        "streams": args.streams,
        "layouts": args.layouts,
        "rounds": args.rounds,
        "jobs": args.jobs,
        "rows": rows,
    }
    result["targets"] = targets(rows)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return report(result, args)


def report(result: dict[str, Any], args: argparse.Namespace) -> int:
    """Print the result (and write the doc's sections); 1 if a configuration is flagged."""
    rows = result["rows"]
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
