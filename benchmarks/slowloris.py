"""Scrape latency while slow clients hold connections open (slowloris), with and without the defence.

The exporter's server runs in a process of its own (so the attacking threads here do not share its
interpreter lock), once as it is now ("after": headers read off the worker pool with a 10 s deadline,
workers reserved for bodiless requests) and once as it was before issue 18 row 3 ("before": a thread per
connection from the first byte, 32 at most, each read under a 10 s timeout, which main 6c4c630 shipped;
rebuilt here from the same wsgiref classes). For each count of slow connections, they are opened, each sends
``GET /metrics HTTP/1.1`` and then one header byte every ``--every`` seconds, and one that the server closes
is opened again at once, as the attack does. Meanwhile ``--scrapes`` scrapes, one every ``--gap`` seconds,
each given Prometheus's default scrape timeout (10 s); after three time out in a row the rest are not tried.
Both servers run at once, each with its own slow connections, and are scraped in turn, so the shared
machine's changes of load fall on both alike. Reported per (server, count): scrapes answered and timed out,
and the latency's p50 and p99 (wall time; a timed-out scrape counts as its timeout), with the ratio
before/after.

    python benchmarks/slowloris.py [--counts 0,40,200] [--scrapes 40] [--every 1] [--gap 0.25] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
SCRAPE_TIMEOUT = 10.0  # Prometheus's default scrape_timeout
HEAD = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "


def serve(which: str) -> None:
    """The server process: start the exporter's server (``which``: before or after), print its port, wait."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    from claude_exporter import server as srv
    from claude_exporter.config import parse_config

    config = parse_config({"monitoring": {}, "exporter": {"server": {"token_env": None}}})
    if which == "after":
        running = srv.start_http_server(0, config=config)
        port = running.port
    else:

        class Before(ThreadingMixIn, WSGIServer):
            """main 6c4c630's server: a worker per connection from its accept, 32 at most."""

            daemon_threads = True
            request_queue_size = srv.BACKLOG

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self._slots = threading.BoundedSemaphore(srv.MAX_WORKERS)
                super().__init__(*args, **kwargs)

            def process_request(self, request: Any, client_address: Any) -> None:
                self._slots.acquire()
                super().process_request(request, client_address)

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    self._slots.release()

        server = make_server("127.0.0.1", 0, srv.make_wsgi_app(), Before, handler_class=srv._QuietHandler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        port = server.server_address[1]
    print(port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin


@contextlib.contextmanager
def server_process(which: str) -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE), "--serve", which],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Attack:
    """``count`` slow connections kept open: each sends HEAD, then a byte every ``every`` seconds."""

    def __init__(self, port: int, count: int, every: float) -> None:
        self.port, self.every = port, every
        self.socks: list[socket.socket | None] = [None] * count
        self.reopened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            sock.setblocking(False)
            sock.send(HEAD)
            return sock
        except OSError:
            return None

    def _alive(self, sock: socket.socket) -> bool:
        try:
            sock.recv(4096)  # the server wrote (a 408) or closed: done with it either way
            return False
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, sock in enumerate(self.socks):
                if sock is not None and self._alive(sock):
                    with contextlib.suppress(OSError):
                        sock.send(b"x")
                        continue
                if sock is not None:
                    sock.close()
                    self.reopened += 1
                self.socks[i] = self._open()
            self._stop.wait(self.every)

    def __enter__(self) -> Attack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            if sock is not None:
                sock.close()


def scrape(port: int) -> float | None:
    """Seconds one scrape took to be answered 200 in full, None if it timed out or failed."""
    start = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=SCRAPE_TIMEOUT) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
                if time.perf_counter() - start > SCRAPE_TIMEOUT:
                    return None
    except OSError:  # TimeoutError included
        return None
    return time.perf_counter() - start if answer.startswith(b"HTTP/1.0 200 ") else None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(count: int, scrapes: int, every: float, gap: float) -> dict[str, dict[str, Any]]:
    """Both servers at once, each under its own ``count`` slow connections, scraped in turn (before, then
    after), so a change in the shared machine's load falls on both alike."""
    with contextlib.ExitStack() as stack:
        ports = {which: stack.enter_context(server_process(which)) for which in ("before", "after")}
        attacks = {which: stack.enter_context(Attack(port, count, every)) for which, port in ports.items()}
        time.sleep(2.0 if count else 0.2)  # the slow connections open and start dripping first
        latencies: dict[str, list[float]] = {which: [] for which in ports}
        timed_out = dict.fromkeys(ports, 0)
        in_a_row = dict.fromkeys(ports, 0)
        for _ in range(scrapes):
            for which, port in ports.items():
                if in_a_row[which] == 3:
                    continue  # three timeouts in a row: the rest would time out too
                took = scrape(port)
                in_a_row[which] = 0 if took is not None else in_a_row[which] + 1
                timed_out[which] += took is None
                latencies[which].append(SCRAPE_TIMEOUT if took is None else took)
            time.sleep(gap)
        return {
            which: {
                "server": which,
                "slow_connections": count,
                "scrapes": len(latencies[which]),
                "answered": len(latencies[which]) - timed_out[which],
                "timed_out": timed_out[which],
                "p50_ms": 1000 * percentile(latencies[which], 0.5),
                "p99_ms": 1000 * percentile(latencies[which], 0.99),
                "reopened": attacks[which].reopened,
            }
            for which in ports
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=("before", "after"), help=argparse.SUPPRESS)
    parser.add_argument("--counts", default="0,40,200")
    parser.add_argument("--scrapes", type=int, default=40)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between a slow client's bytes")
    parser.add_argument("--gap", type=float, default=0.25, help="seconds between scrapes")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    load = os.getloadavg()[0]
    rows = []
    for count in (int(c) for c in args.counts.split(",")):
        pair = measure(count, args.scrapes, args.every, args.gap)
        rows.extend(pair.values())
        before, after = pair["before"], pair["after"]
        print(
            f"{count:>4} slow: "
            + "  ".join(
                f"{r['server']}: {r['answered']}/{r['scrapes']} answered, p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms"
                for r in (before, after)
            )
            + f"  before/after p50 {before['p50_ms'] / after['p50_ms']:.1f}x,"
            f" p99 {before['p99_ms'] / after['p99_ms']:.1f}x; slow connections reopened after the server"
            f" dropped them: {before['reopened']} before, {after['reopened']} after",
            flush=True,
        )
    machine = (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {load:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end"
    )
    print(f"Machine: {machine}.")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
