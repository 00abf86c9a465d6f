"""``claude-exporter run -- python app.py``: measure an unchanged Python program.

In the spirit of ``opentelemetry-instrument``, ``run`` puts the bootstrap directory (``_bootstrap/``,
holding a ``sitecustomize.py``) in front of ``PYTHONPATH``, passes its settings in environment variables,
and replaces itself with the command (so signals, the process id and the exit status are the program's
own). Python imports ``sitecustomize`` at start-up; ours runs any ``sitecustomize`` it shadows, then
:func:`activate`: ``instrument()`` with the configuration, the exporter on the port if one is set, and a
push of the final metrics to a Pushgateway at exit if one is named.

Settings (each flag of ``run`` has its variable; the variables alone work too, with ``PYTHONPATH`` set to
:data:`BOOTSTRAP_DIR`):

- ``CLAUDE_EXPORTER_CONFIG``: the configuration file;
- ``CLAUDE_EXPORTER_PORT`` / ``CLAUDE_EXPORTER_ADDR``: serve the endpoints there (port 0 or unset: no server);
- ``CLAUDE_EXPORTER_PUSHGATEWAY``: push the metrics there at exit, grouped by ``CLAUDE_EXPORTER_JOB``
  (default ``claude-exporter``) and ``CLAUDE_EXPORTER_INSTANCE`` (default ``hostname:pid``).

Python programs started by the program inherit the variables and are measured too; only the first one
serves the port (descendants see port 0), and each pushes its own group.

Which Python: the one ``claude-exporter`` was installed with, since only it can import the bootstrap's
``claude_exporter``. A command named ``python`` or ``python3`` (no directory) runs ``sys.executable``,
whatever ``python`` comes first on ``PATH``; and when that interpreter is a virtual environment's, its
``bin`` directory goes first on the child's ``PATH``, as activating it would, so console scripts
(``gunicorn``, ``pytest``) and Pythons the program starts by name come from the same environment.

This module is imported in every bootstrapped process, so it imports nothing heavy at the top.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

__all__ = [
    "BOOTSTRAP_DIR",
    "DEFAULT_JOB",
    "ENV_ADDR",
    "ENV_CONFIG",
    "ENV_INSTANCE",
    "ENV_JOB",
    "ENV_PORT",
    "ENV_PUSHGATEWAY",
    "activate",
    "child_environ",
    "push_metrics",
    "run",
]

ENV_CONFIG = "CLAUDE_EXPORTER_CONFIG"  # the same variable instrument() reads
ENV_PORT = "CLAUDE_EXPORTER_PORT"
ENV_ADDR = "CLAUDE_EXPORTER_ADDR"
ENV_PUSHGATEWAY = "CLAUDE_EXPORTER_PUSHGATEWAY"
ENV_JOB = "CLAUDE_EXPORTER_JOB"
ENV_INSTANCE = "CLAUDE_EXPORTER_INSTANCE"
DEFAULT_JOB = "claude-exporter"
BOOTSTRAP_DIR = Path(__file__).resolve().parent / "_bootstrap"
PUSH_TIMEOUT = 5.0
_PYTHONS = ("python", "python3")  # bare names only: a path, or python3.X, is taken as written


def _warn(message: str) -> None:
    print(f"claude-exporter: {message}", file=sys.stderr, flush=True)


def child_environ(
    environ: Mapping[str, str],
    *,
    config: str | None = None,
    port: int = 0,
    addr: str | None = None,
    pushgateway: str | None = None,
    job: str | None = None,
    instance: str | None = None,
) -> dict[str, str]:
    """``environ`` plus the bootstrap on ``PYTHONPATH``, this virtual environment first on ``PATH`` (if
    it is one), and the settings for :func:`activate`."""
    env = dict(environ)
    if sys.prefix != sys.base_prefix:  # a virtual environment: what `activate` does, PATH-wise
        scripts = os.path.dirname(sys.executable)
        path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != scripts]
        env["PATH"] = os.pathsep.join([scripts, *path])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    bootstrap = str(BOOTSTRAP_DIR)
    env["PYTHONPATH"] = os.pathsep.join([bootstrap, *(p for p in paths if p != bootstrap)])
    settings = {
        # Absolute, so a program that changes directory before importing anthropic still finds it.
        ENV_CONFIG: os.path.abspath(config) if config else None,
        ENV_PORT: str(port),
        ENV_ADDR: addr,
        ENV_PUSHGATEWAY: pushgateway,
        ENV_JOB: job,
        ENV_INSTANCE: instance,
    }
    for key, value in settings.items():
        if value is not None:
            env[key] = value
    return env


def run(
    command: Sequence[str],
    *,
    config: str | None = None,
    port: int = 0,
    addr: str | None = None,
    pushgateway: str | None = None,
    job: str | None = None,
    instance: str | None = None,
    replace: bool | None = None,
) -> int:
    """Run ``command`` bootstrapped; returns its exit status (127: not found, 126: not executable).

    ``replace`` (default: on POSIX) turns this process into the command with ``exec``, so it never
    returns on success; otherwise the command runs as a child and its status is returned.
    """
    if not command:
        raise ValueError("no command to run")
    if command[0] in _PYTHONS:  # the interpreter that has claude_exporter, not PATH's first python
        command = [sys.executable, *command[1:]]
    env = child_environ(
        os.environ, config=config, port=port, addr=addr, pushgateway=pushgateway, job=job, instance=instance
    )
    replace = os.name == "posix" if replace is None else replace
    try:
        if replace:
            sys.stdout.flush()
            sys.stderr.flush()
            os.execvpe(command[0], list(command), env)
        return subprocess.call(list(command), env=env)
    except FileNotFoundError:
        _warn(f"run: command not found: {command[0]}")
        return 127
    except PermissionError:
        _warn(f"run: permission denied: {command[0]}")
        return 126


# -- inside the bootstrapped process ----------------------------------------------------------------------


def push_metrics(gateway: str, job: str, instance: str | None = None) -> None:
    """Push the default registry to ``gateway`` (replacing the group ``job`` / ``instance``); never raises."""
    try:
        from prometheus_client import REGISTRY, push_to_gateway

        instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        push_to_gateway(
            gateway, job=job, registry=REGISTRY, grouping_key={"instance": instance}, timeout=PUSH_TIMEOUT
        )
    except Exception as err:  # the program has finished its work; a monitoring hiccup must not fail it
        _warn(f"could not push metrics to {gateway}: {err}")


def activate(environ: MutableMapping[str, str] | None = None) -> bool:
    """Instrument this process from the ``CLAUDE_EXPORTER_*`` variables; returns whether it did.

    Never raises: a monitoring problem is reported on stderr and the program runs unmeasured.
    """
    env = os.environ if environ is None else environ
    try:
        import atexit

        from claude_exporter.instrumentation.instrumentor import instrument
        from claude_exporter.recording.state import ACTIVE
        from claude_exporter.server import start_http_server

        instrument()  # reads CLAUDE_EXPORTER_CONFIG
        config = ACTIVE.opened.config
    except Exception as err:
        _warn(f"instrumentation is off: {err}")
        return False
    port = _port(env.get(ENV_PORT))
    if port:
        addr = env.get(ENV_ADDR) or config.server.address
        try:
            start_http_server(port, addr, config=config)
        except Exception as err:
            _warn(f"cannot serve metrics on {addr}:{port}: {err}")
        # One port, one process: Python programs this one starts are measured but do not compete for it.
        env[ENV_PORT] = "0"
    gateway = env.get(ENV_PUSHGATEWAY)
    if gateway:
        # Registered at start-up, so it runs after the program's own exit handlers (they run last-in
        # first-out) and the push holds the final counts.
        atexit.register(push_metrics, gateway, env.get(ENV_JOB) or DEFAULT_JOB, env.get(ENV_INSTANCE))
    return True


def _port(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        _warn(f"{ENV_PORT}={value!r} is not a port number; not serving metrics")
        return 0
