"""``claude-exporter demo``: a simulated fleet making real SDK calls against the built-in fake API.

Four agents, each a thread running agent loops (executions of one to three requests) through the real
``anthropic`` client, instrumented like any application:

- ``support-bot``      healthy: steady latency and tokens, streams half its answers;
- ``code-runner``      slowing down: latency drifts upward, runs code blocks that sometimes fail;
- ``research-agent``   token spike: after a minute its executions use about four times the tokens;
- ``batch-summariser`` rate limited and erroring: 429s (retried), 529s and 500s, low rate-limit headroom.
"""

from __future__ import annotations

import contextlib
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

import anthropic
import yaml
from anthropic.types import MessageParam

from claude_exporter.config import Config, load_config, parse_config
from claude_exporter.recording.execution import execution
from claude_exporter.testing import FakeAnthropic, FakeRequest, Outcome, Reply, code_execution_blocks

__all__ = ["AGENTS", "Fleet", "demo_config", "run"]

MODEL = "claude-sonnet-5-5"
OUTCOMES: tuple[Outcome, ...] = ("success", "nonzero_exit", "tool_error")


@dataclass(frozen=True)
class Agent:
    name: str
    task: str
    reply: Callable[[float, random.Random], Reply]  # (seconds since start, rng) -> the next reply
    stream_share: float = 0.0
    pause: float = 0.5


def _ratelimit(remaining_share: float) -> dict[str, tuple[int, int, str]]:
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    return {
        "requests": (1000, int(1000 * remaining_share), reset),
        "tokens": (400_000, int(400_000 * remaining_share), reset),
        "input_tokens": (300_000, int(300_000 * remaining_share), reset),
        "output_tokens": (100_000, int(100_000 * remaining_share), reset),
    }


def _healthy(t: float, rng: random.Random) -> Reply:
    return Reply(
        latency=rng.uniform(0.1, 0.4),
        input_tokens=rng.randint(800, 1200),
        output_tokens=rng.randint(150, 300),
        cache_read_input_tokens=rng.choice((0, 2048)),
        ratelimit=_ratelimit(0.8),
        text_deltas=8,
    )


def _slowing(t: float, rng: random.Random) -> Reply:
    outcome: Outcome = rng.choices(OUTCOMES, (0.7, 0.2, 0.1))[0]
    return Reply(
        latency=0.2 + min(t / 60.0, 4.0) * rng.uniform(0.8, 1.2),  # about +1 s per minute, up to 5 s
        input_tokens=rng.randint(1500, 2500),
        output_tokens=rng.randint(300, 600),
        content=[{"type": "text", "text": "Running it."}, *code_execution_blocks(outcome)],
        ratelimit=_ratelimit(0.7),
    )


def _spiking(t: float, rng: random.Random) -> Reply:
    factor = 4 if t > 60 else 1
    return Reply(
        latency=rng.uniform(0.2, 0.5),
        input_tokens=factor * rng.randint(3000, 4000),
        output_tokens=factor * rng.randint(400, 700),
        cache_creation_input_tokens=rng.choice((0, 1024)),
        stop_reason=rng.choices(("end_turn", "max_tokens"), (0.9, 0.1))[0],
        ratelimit=_ratelimit(0.6),
    )


def _limited(t: float, rng: random.Random) -> Reply:
    roll = rng.random()
    if roll < 0.25:
        return Reply(status=429, retry_after=0.3, ratelimit=_ratelimit(0.02))
    if roll < 0.35:
        return Reply(status=529)
    if roll < 0.40:
        return Reply(status=500)
    return Reply(
        latency=rng.uniform(0.3, 0.8), input_tokens=6000, output_tokens=900, ratelimit=_ratelimit(0.05)
    )


AGENTS = (
    Agent("support-bot", "answer", _healthy, stream_share=0.5),
    Agent("code-runner", "run_code", _slowing),
    Agent("research-agent", "research", _spiking, stream_share=0.3),
    Agent("batch-summariser", "summarise", _limited, pause=0.3),
)


class Fleet:
    """The fake API and one thread per agent; ``stop()`` ends them."""

    def __init__(self, agents: tuple[Agent, ...] = AGENTS, seed: int = 7) -> None:
        self.agents = {agent.name: agent for agent in agents}
        self.fake = FakeAnthropic(responder=self._respond)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = time.monotonic()

    def _respond(self, request: FakeRequest) -> Reply:
        agent = self.agents.get(request.key or "")
        if agent is None:
            return Reply()
        with self._lock:  # one generator for all threads, so a seed gives a repeatable mix
            return agent.reply(time.monotonic() - self.started, self._rng)

    def start(self) -> Fleet:
        self.fake.start()
        for agent in self.agents.values():
            thread = threading.Thread(target=self._run, args=(agent,), name=f"demo-{agent.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, agent: Agent) -> None:
        client = self.fake.client(key=agent.name, max_retries=2)
        rng = random.Random(agent.name)
        messages: list[MessageParam] = [{"role": "user", "content": f"A task for {agent.name}."}]
        while not self._stop.is_set():
            try:
                with execution(agent.task, agent=agent.name):
                    for _ in range(rng.randint(1, 3)):  # an agent loop of one to three turns
                        if rng.random() < agent.stream_share:
                            with client.messages.stream(model=MODEL, max_tokens=1024, messages=messages) as s:
                                s.until_done()
                        else:
                            client.messages.create(model=MODEL, max_tokens=1024, messages=messages)
            except anthropic.APIError:
                pass  # recorded by the exporter; the agent carries on, as real ones do
            self._stop.wait(agent.pause)

    def stop(self, timeout: float = 3.0) -> int:
        """Stop the agents and the fake API; returns how many agent threads were still busy at ``timeout``.

        The fake stops first, so a request waiting out its scripted latency (up to 5 s for code-runner)
        ends at once instead of being waited for. A thread can still be inside the SDK's retry back-off
        after that; the threads are daemons, so one still busy at the shared deadline ends with the process.
        """
        self._stop.set()
        self.fake.stop()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return sum(thread.is_alive() for thread in self._threads)


def demo_config(workdir: Path, path: str | None = None) -> Config:
    """The demo's configuration (``path``, or the packaged demo.yaml), its event log put in ``workdir``."""
    if path is not None:
        return load_config(path)
    data = yaml.safe_load(resources.files(__package__).joinpath("demo.yaml").read_text(encoding="utf-8"))
    data["exporter"]["event_log"]["path"] = str(workdir / "events.log")
    return parse_config(data, source="demo.yaml")


def _loopback(addr: str) -> str:
    """Where a local Prometheus reaches a server bound to ``addr``."""
    return "127.0.0.1" if addr in ("", "0.0.0.0", "::") else addr


_SEEN: dict[str, str] = {}


def _print_alert(alert: dict[str, Any]) -> None:
    # Alertmanager resends a whole group whenever it changes: print each alert's changes only.
    key = str(alert.get("fingerprint"))
    if _SEEN.get(key) == alert.get("status"):
        return
    _SEEN[key] = str(alert.get("status"))
    labels = alert.get("labels", {})
    state = "RESOLVED" if alert.get("status") == "resolved" else "FIRING  "
    print(
        f"{time.strftime('%H:%M:%S')} {state} {labels.get('alertname')} agent={labels.get('agent', '-')} "
        f"severity={labels.get('severity', '-')}: {alert.get('annotations', {}).get('summary', '')}",
        flush=True,
    )


class _Stopped(BaseException):
    """Raised in the main thread by the first stop signal; a BaseException, like KeyboardInterrupt, so
    nothing that catches Exception swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.why, self.status = _STOPS[signum]


# How each signal ends the demo (see the cli package's docstring): Ctrl-C as the shell's interrupted
# command (130); SIGTERM (``kill``, ``timeout``, service managers) and SIGHUP (the terminal closed) as a
# requested stop (0).
_STOPS: dict[int, tuple[str, int]] = {
    signal.SIGINT: ("Ctrl-C", 130),
    signal.SIGTERM: ("SIGTERM", 0),
    signal.SIGHUP: ("SIGHUP", 0),
}


class _StopSignals:
    """SIGINT, SIGTERM and SIGHUP handled from ``__enter__`` to ``__exit__``; the first one raises
    :class:`_Stopped` in the main thread while armed, every later one is ignored, so a cleanup is never cut
    short. Handlers go in before anything is started and a signal before :meth:`arm` waits for it, so no
    moment is left where a signal ends the process without its cleanup. :meth:`deferred` holds a signal
    back over a step that must not be cut in two (a child started but not yet recorded)."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._armed = False
        self._stopping = False
        self._deferring = 0
        self._pending: int | None = None

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers can only go there
            # A signal ignored from the start stays ignored: under nohup, SIGHUP must not stop the demo.
            for signum in _STOPS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            return
        if not self._armed or self._deferring:
            self._pending = self._pending or signum
            return
        self._stopping = True
        raise _Stopped(signum)

    def arm(self) -> None:
        """From here the first signal raises; one that came before raises now."""
        self._armed = True
        self._raise_pending()

    def disarm(self) -> None:
        """From here on every signal is ignored (the cleanup runs)."""
        self._stopping = True

    def _raise_pending(self) -> None:
        if self._pending is not None and self._armed and not self._deferring and not self._stopping:
            self._stopping = True
            raise _Stopped(self._pending)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A signal during the block raises at its end instead of inside it."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        self._raise_pending()


def run(
    port: int = 9466, addr: str = "127.0.0.1", duration: float | None = None, config: str | None = None
) -> int:
    """The ``demo`` command: instrument, serve, drive the fleet; with Prometheus and Alertmanager
    installed, also run them on the demo's rules and print alerts as they arrive.

    Returns 0 when it ends by ``duration``, SIGTERM or SIGHUP (a requested stop), 130 on Ctrl-C (SIGINT).
    Whatever stops it, and whenever, every child it started is stopped and waited for before it returns.
    """
    from claude_exporter.cli.localstack import LocalStack, binaries_present
    from claude_exporter.instrumentation.instrumentor import instrument, uninstrument
    from claude_exporter.server import start_http_server

    status, why = 0, "a failure" if duration is None else f"its {duration:g} s are up"
    started = False  # the stop is narrated once the banner is out; a failed start says why itself

    def say(line: str) -> None:
        if started:
            # After SIGHUP the terminal may be gone: a line that cannot be written must not stop the cleanup.
            with contextlib.suppress(OSError):
                print(line, flush=True)

    # The handlers go in first, so no signal finds the demo without them; the temporary directory is made
    # while a signal still waits for arm().
    with _StopSignals() as signals, tempfile.TemporaryDirectory(prefix="claude-exporter-demo-") as tmp:
        workdir = Path(tmp)
        server = fleet = stack = None
        try:
            signals.arm()
            cfg = demo_config(workdir, config)
            instrument(config=cfg)
            server = start_http_server(port, addr)
            fleet = Fleet().start()
            if binaries_present():
                stack = LocalStack(
                    cfg, f"{_loopback(addr)}:{server.port}", workdir, _print_alert, spawning=signals.deferred
                )
                stack.start()
            print(f"claude-exporter demo: {len(fleet.agents)} simulated agents ({', '.join(fleet.agents)})")
            # Not printed as a URL: the fake answers the SDK's paths only, and every URL printed opens.
            print(f"  against a built-in fake Anthropic API (127.0.0.1:{fleet.fake.port}), real SDK calls")
            print(f"  metrics:      {server.url}/metrics")
            print(f"  health:       {server.url}/health/claude-agent")
            if stack is not None:
                links = stack.links()
                print(f"  prometheus:   {links['prometheus']} (rules from the demo config)")
                print(f"  alertmanager: {links['alertmanager']} (the alerts as JSON)")
                print("  Alerts print below as they fire; the first ones take about a minute.")
            else:
                print("  (install prometheus and prometheus-alertmanager to watch the alerts fire too)")
            # Narrate the stop from here on: a Ctrl-C prompted by the next line must never find it off.
            started = True
            print("Press Ctrl-C to stop." if duration is None else f"Running for {duration:g} s.", flush=True)
            deadline = None if duration is None else time.monotonic() + duration
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
            signals.disarm()  # still inside the try: a signal from here to the cleanup is ignored
        except _Stopped as stop:
            if stop.status == 130:
                say("")  # past the ^C the terminal echoed
            status, why = stop.status, stop.why
        finally:
            # Whatever stopped the demo, a second signal must not cut this short: the children and the
            # temporary directory go with it. Each step is announced before it runs, so a slow one shows.
            signals.disarm()
            say(f"claude-exporter demo: stopping ({why})")
            if fleet is not None:
                say(f"  stopping the {len(fleet.agents)} simulated agents and the fake API")
                busy = fleet.stop()
                if busy:
                    say(f"  {busy} agent(s) still inside an SDK retry; they end with the process")
            if stack is not None:
                names = ", ".join(f"{name} (pid {pid})" for name, pid in stack.pids().items())
                say(f"  stopping {names}")
                stack.stop(say=lambda line: say(f"  {line}"))  # each process as it ends
            if server is not None:
                say(f"  stopping the exporter at {server.url}")
                server.close()
            uninstrument()
            say(f"  removing {workdir}")
    say("claude-exporter demo: stopped")
    return status
