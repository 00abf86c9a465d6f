"""The server's promises: loopback by default, ``make_wsgi_app()`` mounted inside an existing app, and
``/metrics`` serving the recorder's families beside the registry's other collectors, each once."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import claude_exporter as ce
import pytest
from conftest import kw
from prometheus_client import Counter, ProcessCollector, generate_latest

pytestmark = pytest.mark.integration


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log in the test output."""


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_start_http_server_binds_to_loopback_by_default(instrumented: Any) -> None:
    registry, _ = instrumented
    server = ce.start_http_server(0, registry=registry)
    try:
        assert server._server.socket.getsockname()[0] == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert get(f"{server.url}/-/healthy") == (200, "OK\n")
    finally:
        server.close()


@pytest.fixture
def mounted(instrumented: Any) -> Iterator[str]:
    """An existing WSGI application with the exporter mounted under /claude, served for real."""
    registry, _ = instrumented
    exporter = ce.make_wsgi_app(registry, token="s3cret")

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/claude/"):
            # The usual WSGI mount: the prefix moves to SCRIPT_NAME, the rest stays in PATH_INFO.
            environ = {**environ, "SCRIPT_NAME": "/claude", "PATH_INFO": path.removeprefix("/claude")}
            return exporter(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the application's own page\n"]

    server = make_server("127.0.0.1", 0, application, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_make_wsgi_app_mounts_in_an_existing_app(mounted: str, fake_anthropic: Any) -> None:
    url = mounted
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert get(f"{url}/hello") == (200, "the application's own page\n")
    assert get(f"{url}/claude/-/healthy") == (200, "OK\n")  # liveness needs no token
    assert get(f"{url}/claude/metrics")[0] == 401
    status, text = get(f"{url}/claude/metrics", token="s3cret")
    assert status == 200
    assert 'claude_requests_total{agent="default",model="claude-haiku-4-5",outcome="success"} 1.0' in text
    status, body = get(f"{url}/claude/health/claude-agent", token="s3cret")
    assert status == 200
    assert '"executions": 1' in body


def type_lines(text: str) -> list[str]:
    return [line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE ")]


def test_metrics_serves_the_recorder_and_the_application_families_once(
    instrumented: Any, fake_anthropic: Any
) -> None:
    registry, _ = instrumented
    jobs = Counter("app_jobs", "The application's own counter.", ["queue"], registry=registry)
    jobs.labels("default").inc()
    ProcessCollector(registry=registry)
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    server = ce.start_http_server(0, registry=registry, token="s3cret")
    try:
        assert get(f"{server.url}/metrics")[0] == 401
        status, text = get(f"{server.url}/metrics", token="s3cret")
    finally:
        server.close()
    assert status == 200
    names = type_lines(text)
    assert len(names) == len(set(names)), "a family written twice"
    assert {"claude_requests_total", "app_jobs_total", "claude_agent_info"} <= set(names)
    assert 'app_jobs_total{queue="default"} 1.0' in text
    # generate_latest on the registry still has the recorder's families, through collect().
    assert 'claude_requests_total{agent="default",model="claude-haiku-4-5",outcome="success"} 1.0' in (
        generate_latest(registry).decode()
    )


def test_metrics_on_the_default_registry_keeps_the_process_collectors(
    fresh: None, fake_anthropic: Any
) -> None:
    ce.instrument()  # prometheus_client's REGISTRY, with its process, platform and gc collectors
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    server = ce.start_http_server(0, token="s3cret")
    try:
        status, text = get(f"{server.url}/metrics?name[]=claude_requests_total&name[]=python_info", "s3cret")
        assert status == 200
        assert type_lines(text) == ["claude_requests_total", "python_info"]
        status, text = get(f"{server.url}/metrics", token="s3cret")
    finally:
        server.close()
    names = type_lines(text)
    assert len(names) == len(set(names)), "a family written twice"
    assert {"claude_requests_total", "python_info", "python_gc_objects_collected_total"} <= set(names)
