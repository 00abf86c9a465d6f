"""A real container engine for `make test-stack`: dockerd started (and stopped) here, and the images the
Compose stack runs, built from local inputs only (no image registry is reachable on CI machines).

    python tools/stack/engine.py images   # start dockerd if none answers, build every image, stop it

Images (each build is cached: the base by a hash of its inputs, the others by the engine's layer cache):

- ``claude-exporter-stack/debian-python:bookworm-<hash>``: Debian bookworm (``mmdebstrap --variant=minbase``)
  with python3, ``docker import``-ed; it trusts the host's certificate authorities and carries the host's
  pip ``cert`` setting, so pip inside a build reaches the package index the way the host does;
- ``claude-exporter:0.1.0`` from ``deploy/compose/Dockerfile`` with ``PYTHON_IMAGE`` set to that base;
- ``claude-exporter-stack/prometheus:2.42-debian`` and ``claude-exporter-stack/alertmanager:0.25-debian``,
  Debian's packages on the same base with the upstream images' entrypoints, users and data directories:
  stand-ins for ``prom/prometheus`` and ``prom/alertmanager``, which cannot be pulled here.

The daemon keeps its images in ``CACHE`` (default ``/var/cache/claude-exporter-stack``, or
``$CLAUDE_EXPORTER_STACK_CACHE``), which survives between runs on one machine. A daemon that already
answers (``$DOCKER_HOST``, or the default socket) is used as it is and left running.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ALERTMANAGER_IMAGE",
    "EXPORTER_IMAGE",
    "PROMETHEUS_IMAGE",
    "Engine",
    "build_images",
    "engine",
    "timed",
]

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("CLAUDE_EXPORTER_STACK_CACHE") or "/var/cache/claude-exporter-stack")
RUN = Path("/run/claude-exporter-stack")
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
EXPORTER_IMAGE = "claude-exporter:0.1.0"
PROMETHEUS_IMAGE = "claude-exporter-stack/prometheus:2.42-debian"
ALERTMANAGER_IMAGE = "claude-exporter-stack/alertmanager:0.25-debian"
# What the stack's engine may need on a Debian machine, by the command that shows it is there.
DEBS = {
    "dockerd": "docker.io",
    "containerd": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "docker-compose": "docker-compose",
    "mmdebstrap": "mmdebstrap",
}

TIMINGS: list[tuple[str, float]] = []


@contextlib.contextmanager
def timed(step: str) -> Iterator[None]:
    """Records (and prints) how long ``step`` took, with the load average when it ended."""
    began = time.monotonic()
    try:
        yield
    finally:
        took = time.monotonic() - began
        TIMINGS.append((step, took))
        load = os.getloadavg()[0]
        print(f"stack: {step}: {took:.1f} s (load {load:.2f})", file=sys.stderr, flush=True)


def missing_debs() -> list[str]:
    """The Debian packages whose commands are not on this machine."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return sorted({deb for cmd, deb in DEBS.items() if not shutil.which(cmd, path=path)})


def _docker_cli() -> str:
    # Debian's CLI matches Debian's daemon (20.10); a newer CLI on PATH works too, but warns on every build.
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("no docker command: install docker.io (make stack-debs)")


@dataclass
class Engine:
    """A Docker daemon to talk to: ``env`` holds the ``DOCKER_HOST`` the CLI and docker-compose use."""

    host: str
    started: bool = False  # True when this process started dockerd (and so stops it)
    images: dict[str, str] = field(default_factory=dict)  # Compose variables naming the built images
    cli: str = field(default_factory=_docker_cli)

    @property
    def env(self) -> dict[str, str]:
        # The legacy builder: what compose v1 uses too, and what Debian's 20.10 CLI has without buildx.
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def docker(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.cli, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            tail = (done.stdout + done.stderr)[-6000:]
            raise RuntimeError(f"docker {' '.join(args)}: exit {done.returncode}\n{tail}")
        return done

    def answers(self) -> bool:
        try:
            return (
                self.docker("version", "--format", "{{.Server.Version}}", check=False, timeout=10).returncode
                == 0
            )
        except (subprocess.TimeoutExpired, OSError):
            return False

    def image_exists(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False).returncode == 0

    def image_size(self, tag: str) -> int:
        return int(self.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def _sysctl(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


# Host settings dockerd changes and does not put back when it stops.
_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding", "net.bridge.bridge-nf-call-iptables")


@contextlib.contextmanager
def engine(log: Path | None = None) -> Iterator[Engine]:
    """A Docker daemon: one that already answers, else a dockerd started here (as root) and stopped on exit,
    with the host's forwarding sysctls, the docker0 bridge and Docker's iptables chains put back as found."""
    for host in filter(None, (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock")):
        existing = Engine(host)
        if existing.answers():
            yield existing
            return
    if os.geteuid() != 0:
        raise RuntimeError(
            "no Docker daemon answers and only root can start one (run as root, or start dockerd)"
        )
    dockerd = shutil.which("dockerd", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not dockerd:
        raise RuntimeError("dockerd is not installed (make stack-debs installs docker.io)")
    RUN.mkdir(parents=True, exist_ok=True)
    _stop_stale(RUN / "dockerd.pid")
    # The host as it was before any dockerd of ours, kept on disk: a run killed before it could put things
    # back leaves it for the next run to use.
    state_file = RUN / "host-state.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
    else:
        state = {
            "sysctls": {name: _sysctl(name).read_text() for name in _SYSCTLS if _sysctl(name).exists()},
            "iptables": _iptables_state(),
        }
        state_file.write_text(json.dumps(state))
    (CACHE / "docker").mkdir(parents=True, exist_ok=True)
    socket = RUN / "docker.sock"
    own = Engine(f"unix://{socket}", started=True)
    log_path = log or RUN / "dockerd.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [
                dockerd,
                f"--host=unix://{socket}",
                f"--data-root={CACHE / 'docker'}",
                f"--exec-root={RUN / 'exec'}",
                f"--pidfile={RUN / 'dockerd.pid'}",
                "--storage-driver=overlay2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches pytest, which stops it in order
        )
    try:
        deadline = time.monotonic() + 60
        while not own.answers():
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd not answering after 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield own
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # it stops its containers, containerd, and its bridge and chains
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        _undo_host_changes(state["sysctls"], state["iptables"])
        state_file.unlink(missing_ok=True)
        if proc.poll() is not None:
            shutil.rmtree(RUN, ignore_errors=True)  # socket, pidfile, exec root (and the log, when kept here)


def _stop_stale(pidfile: Path) -> None:
    """Stops a dockerd that a killed run of this tool left behind (its pidfile names it)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if not cmdline or not cmdline[0].endswith(b"dockerd") or f"--pidfile={pidfile}".encode() not in cmdline:
        return  # the pid is someone else's now
    print(f"stack: stopping dockerd {pid}, left by an earlier run", file=sys.stderr, flush=True)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def _iptables_state() -> dict[str, dict[str, list[str]]]:
    """``{command: {table: rules as -S prints them}}`` for iptables and ip6tables (the tables that exist)."""
    state: dict[str, dict[str, list[str]]] = {}
    for command in ("iptables", "ip6tables"):
        binary = shutil.which(command, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if not binary:
            continue
        saved = subprocess.run([f"{binary}-save"], capture_output=True, text=True, check=False).stdout
        tables = [line[1:] for line in saved.splitlines() if line.startswith("*")]
        state[binary] = {
            table: subprocess.run(
                [binary, "-t", table, "-S"], capture_output=True, text=True, check=False
            ).stdout.splitlines()
            for table in tables
        }
    return state


def _restore_iptables(before: dict[str, dict[str, list[str]]]) -> None:
    """Removes the rules and chains dockerd added (it leaves some), puts policies back, and drops the
    tables that did not exist before it started."""
    nft = shutil.which("nft", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    for binary, tables in _iptables_state().items():
        for table, rules in tables.items():
            old = before.get(binary, {}).get(table)
            had = set(old or [])

            def run(*args: str, binary: str = binary, table: str = table) -> None:
                subprocess.run([binary, "-t", table, *args], capture_output=True, check=False)

            for rule in reversed(rules):
                parts = rule.split()
                if parts[:1] == ["-A"] and rule not in had:
                    run("-D", *parts[1:])
            for rule in rules:
                parts = rule.split()
                if parts[:1] == ["-N"] and rule not in had:
                    run("-X", parts[1])
                elif parts[:1] == ["-P"] and rule not in had:
                    previous = [r.split()[2] for r in (old or []) if r.split()[:2] == ["-P", parts[1]]]
                    run("-P", parts[1], previous[0] if previous else "ACCEPT")
            if old is None and nft:
                family = "ip6" if binary.endswith("ip6tables") else "ip"
                subprocess.run([nft, "delete", "table", family, table], capture_output=True, check=False)


def _undo_host_changes(saved: dict[str, str], iptables: dict[str, dict[str, list[str]]]) -> None:
    """Puts back what a stopped dockerd leaves changed: sysctls, iptables, the bridge if it is left."""
    for name, value in saved.items():
        with contextlib.suppress(OSError):
            _sysctl(name).write_text(value)
    if Path("/sys/class/net/docker0").exists():
        subprocess.run(["ip", "link", "delete", "docker0"], check=False, capture_output=True)
    _restore_iptables(iptables)
    with contextlib.suppress(OSError):
        shutil.rmtree(RUN / "exec")


def _host_pip_cert() -> Path:
    """The CA bundle the host's pip trusts (its ``cert`` setting), else the system bundle."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.cert"],
        capture_output=True,
        text=True,
        check=False,
    )
    cert = done.stdout.strip()
    return Path(cert) if done.returncode == 0 and cert and Path(cert).is_file() else HOST_CA


def base_image(eng: Engine) -> str:
    """The local base image (Debian with python3), built unless one from the same inputs exists."""
    cert = _host_pip_cert()
    hooks = [
        # The host's CA bundle as a file of its own (an apt run in a later build regenerates the system
        # one), and pip pointed at it, the way the host's pip is configured.
        f'cp {cert} "$1/etc/ssl/certs/host-ca-certificates.crt"',
        "printf '[global]\\ncert = /etc/ssl/certs/host-ca-certificates.crt\\n' > \"$1/etc/pip.conf\"",
    ]
    command = [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        "--include=" + ",".join(BASE_PACKAGES),
        *(f"--customize-hook={hook}" for hook in hooks),
        SUITE,
    ]
    inputs = hashlib.sha256("\0".join(command).encode() + b"\0" + cert.read_bytes())
    tag = f"claude-exporter-stack/debian-python:{SUITE}-{inputs.hexdigest()[:12]}"
    if eng.image_exists(tag):
        print(f"stack: base image {tag} exists (same inputs): not rebuilt", file=sys.stderr, flush=True)
        return tag
    if not shutil.which("mmdebstrap"):
        raise RuntimeError("mmdebstrap is not installed (make stack-debs installs it)")
    with tempfile.TemporaryDirectory(prefix="claude-exporter-base-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run([*command, str(tarball)], check=True, timeout=1200)
        eng.docker("import", "--change", 'CMD ["python3"]', str(tarball), tag, timeout=300)
    return tag


def build(eng: Engine, tag: str, dockerfile: Path, context: Path, **build_args: str) -> None:
    args = ["build", "--quiet", "-f", str(dockerfile), "-t", tag]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    eng.docker(*args, str(context), timeout=1800)


def build_images(eng: Engine) -> dict[str, str]:
    """Builds every image the stack runs; returns the Compose variables that select them."""
    with timed("base image"):
        base = base_image(eng)
    with timed(f"image {EXPORTER_IMAGE}"):
        build(eng, EXPORTER_IMAGE, ROOT / "deploy/compose/Dockerfile", ROOT, PYTHON_IMAGE=base)
    with timed(f"image {PROMETHEUS_IMAGE}"):
        build(eng, PROMETHEUS_IMAGE, HERE / "prometheus.Dockerfile", HERE, BASE_IMAGE=base)
    with timed(f"image {ALERTMANAGER_IMAGE}"):
        build(eng, ALERTMANAGER_IMAGE, HERE / "alertmanager.Dockerfile", HERE, BASE_IMAGE=base)
    # The build stage's untagged layers are the cache that makes the next build quick: only those a week
    # old go, so that changing the sources many times does not fill the disk.
    eng.docker("image", "prune", "--force", "--filter", "until=168h", check=False)
    return {
        "CLAUDE_EXPORTER_IMAGE": EXPORTER_IMAGE,
        "PROMETHEUS_IMAGE": PROMETHEUS_IMAGE,
        "ALERTMANAGER_IMAGE": ALERTMANAGER_IMAGE,
    }


def image_sizes(eng: Engine) -> dict[str, int]:
    out = {}
    for tag in (EXPORTER_IMAGE, PROMETHEUS_IMAGE, ALERTMANAGER_IMAGE):
        if eng.image_exists(tag):
            out[tag] = eng.image_size(tag)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("command", choices=["images", "missing-debs"])
    args = parser.parse_args(argv)
    if args.command == "missing-debs":
        print(" ".join(missing_debs()))
        return 0
    with engine() as eng:
        build_images(eng)
        print(json.dumps({k: f"{v / 1e6:.0f} MB" for k, v in image_sizes(eng).items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
