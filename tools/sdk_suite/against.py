"""`make test-newest` / `make test-floor`: the project's own tests, then the SDK's own suite with the shim,
against another anthropic than the lock's.

The venv (``.sdk-suite/project-<version>/venv``) is the locked environment with only anthropic moved to
the version under test (and whatever that version needs moved with it), claude-exporter editable from this
checkout. The last line printed names the version and what broke, so a CI log says in one line whether
yesterday's release of the SDK broke anything.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402 (sibling scripts, not a package)
from versions import REPO, requirement, resolve  # noqa: E402

__all__ = ["main", "project_venv"]

LOCK = REPO / "requirements-dev.lock"
# The tiers that exercise the SDK: in-process and over real HTTP. The system tier (Prometheus rules,
# Alertmanager, containers) depends on the exporter's output, not on the SDK release, and runs on the lock.
DEFAULT_TIERS = "unit or integration"


def project_venv(version: str) -> Path:
    """The lock's environment with anthropic==version; rebuilt only when the lock or the version changed."""
    home = run.CACHE / f"project-{version}"
    env = home / "venv"
    python = env / "bin" / "python"
    digest = hashlib.sha256(LOCK.read_bytes() + version.encode()).hexdigest()
    stamp = env / ".installed"
    if stamp.exists() and stamp.read_text() == digest and python.exists():
        return python
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "setup.log"
    run.log(f"anthropic {version}: the locked environment with it moved, in {env.relative_to(REPO)}")
    run._run([run.UV, "venv", "-q", "--python", sys.executable, env], log_path)
    uv_pip: list[str | Path] = [run.UV, "pip"]
    run._run([*uv_pip, "sync", "-q", "--python", python, LOCK], log_path)
    run._run([*uv_pip, "install", "-q", "--python", python, f"anthropic=={version}"], log_path)
    editable: list[str | Path] = ["--no-deps", "--no-build-isolation", "-e", REPO]
    run._run([*uv_pip, "install", "-q", "--python", python, *editable], log_path)
    run.require_anthropic(python, version)
    stamp.write_text(digest)
    return python


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], epilog="Arguments after -- go to pytest."
    )
    parser.add_argument("version", help="floor, newest, locked or a version number")
    parser.add_argument("--tiers", default=DEFAULT_TIERS, help=f"pytest -m expression ({DEFAULT_TIERS!r})")
    parser.add_argument("-n", "--workers", default="2")
    parser.add_argument("--no-sdk-suite", action="store_true", help="the project's tests only")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` goes to pytest as it is (argparse would take its options for ours).
    pytest_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    version = resolve(args.version)
    what = f"anthropic {version} ({args.version}, pyproject.toml allows {requirement().specifier})"
    run.log(f"{what}: the project's tests ({args.tiers}), then the SDK's suite with the shim")
    started = time.monotonic()
    python = project_venv(version)
    cmd = [str(python), "-m", "pytest", "-q", "-n", args.workers, "-m", args.tiers, *pytest_args]
    project = subprocess.run(cmd, cwd=REPO, check=False).returncode
    broken = [] if project == 0 else [f"the project's tests failed (pytest exit {project})"]
    if not args.no_sdk_suite and run.main([version, "--keep", "-n", args.workers]) != 0:
        broken.append("the shim changes the SDK's own test outcomes")
    elapsed = time.monotonic() - started
    if broken:
        print(f"test-anthropic: FAILED on {what}: {'; '.join(broken)} ({elapsed:.0f}s)")
        return 1
    print(f"test-anthropic: {what}: everything passed ({elapsed:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
