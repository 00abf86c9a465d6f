"""Bearer token and TLS on the exporter's endpoints, up to a scrape by a real Prometheus over https.

The certificate is made in the test by the openssl command line; a missing openssl or prometheus fails the
test (a skipped end-to-end test looks like a passing one).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import claude_exporter as ce
import pytest
import yaml
from claude_exporter.recording.state import ACTIVE
from claude_exporter.testing import Reply
from conftest import MODEL, USER, val
from prometheus_client import CollectorRegistry
from stack import Prometheus, require_binary

TOKEN = "s3cret-token-4f9c1e"
EVENT = {"event": "claude_execution_complete", "duration_ms": 12, "input_tokens": 3, "output_tokens": 4}

# (method, path, body) of every authenticated endpoint; a valid event for the ingestion one.
ENDPOINTS = [
    ("GET", "/metrics", None),
    ("GET", "/health/claude-agent", None),
    ("POST", "/v1/events", json.dumps(EVENT).encode()),
]


# -- helpers -------------------------------------------------------------------------------------------------


def call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    *,
    authorization: str | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body); HTTP errors are answers too."""
    request = urllib.request.Request(url, data=body, method=method)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    if body is not None:
        request.add_header("Content-Type", "application/x-ndjson")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def accepted_events(registry: CollectorRegistry) -> float:
    return val(registry, "claude_exporter_events_total", source="http", result="accepted")


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def server_config(tmp_path: Path, **server: Any) -> Path:
    return write_yaml(tmp_path / "config.yaml", {"monitoring": {}, "exporter": {"server": server}})


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (CN and IP subjectAltName) and its key, made by openssl."""
    openssl = require_binary("openssl")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[CollectorRegistry]:
    """Instrumented into a fresh registry, with no token nor config in the environment."""
    monkeypatch.delenv("CLAUDE_EXPORTER_TOKEN", raising=False)
    monkeypatch.delenv("CLAUDE_EXPORTER_CONFIG", raising=False)
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    reg = CollectorRegistry()
    ce.instrument(registry=reg)
    try:
        yield reg
    finally:
        ce.uninstrument()


@pytest.fixture(scope="module")
def closing() -> Iterator[list[threading.Thread]]:
    """Servers are closed in the background (close() waits up to 0.5 s for the serving loop to notice),
    and every close is waited for at the end of the module."""
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(10)


@pytest.fixture
def servers(closing: list[threading.Thread]) -> Iterator[list[Any]]:
    started: list[Any] = []
    try:
        yield started
    finally:
        for server in started:
            thread = threading.Thread(target=server.close, daemon=True)
            thread.start()
            closing.append(thread)


def serve(servers: list[Any], registry: CollectorRegistry, **kwargs: Any) -> Any:
    server = ce.start_http_server(0, registry=registry, **kwargs)
    servers.append(server)
    return server


def assert_refused(status: int, headers: dict[str, str]) -> None:
    assert status == 401
    assert headers.get("www-authenticate", "").startswith("Bearer")


# -- where the token comes from ------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("variable", ["CLAUDE_EXPORTER_TOKEN", "MY_EXPORTER_TOKEN"])
def test_token_from_the_environment(tmp_path, registry, servers, monkeypatch, variable):
    monkeypatch.setenv(variable, TOKEN)
    if variable == "CLAUDE_EXPORTER_TOKEN":  # the default token_env
        config = write_yaml(tmp_path / "config.yaml", {"monitoring": {}})
    else:
        config = server_config(tmp_path, token_env=variable)
    server = serve(servers, registry, config=str(config))
    status, headers, _ = call(server.url + "/metrics")
    assert_refused(status, headers)
    status, _, body = call(server.url + "/metrics", authorization=f"Bearer {TOKEN}")
    assert status == 200
    assert b"claude_exporter_build_info" in body


@pytest.mark.integration
def test_token_from_a_file(tmp_path, registry, servers, monkeypatch):
    monkeypatch.setenv("CLAUDE_EXPORTER_TOKEN", "not-this-one")  # the file wins over the variable
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # a trailing newline, as editors and `echo` leave it
    server = serve(servers, registry, config=str(server_config(tmp_path, token_file=str(token_file))))
    status, headers, _ = call(server.url + "/metrics", authorization="Bearer not-this-one")
    assert_refused(status, headers)
    status, _, _ = call(server.url + "/metrics", authorization=f"Bearer {TOKEN}")
    assert status == 200


@pytest.mark.unit
def test_an_empty_token_file_is_an_error(tmp_path, registry):
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    with pytest.raises(ValueError, match=r"exporter\.server\.token_file"):
        ce.start_http_server(
            0, registry=registry, config=str(server_config(tmp_path, token_file=str(token_file)))
        )


@pytest.mark.integration
def test_an_explicit_token_wins_over_the_config(tmp_path, registry, servers, monkeypatch):
    monkeypatch.setenv("CLAUDE_EXPORTER_TOKEN", "from-env")
    config = write_yaml(tmp_path / "config.yaml", {"monitoring": {}})
    server = serve(servers, registry, config=str(config), token=TOKEN)
    assert call(server.url + "/metrics", authorization="Bearer from-env")[0] == 401
    assert call(server.url + "/metrics", authorization=f"Bearer {TOKEN}")[0] == 200


@pytest.mark.integration
def test_no_token_configured_means_open(tmp_path, registry, servers):
    server = serve(servers, registry, config=str(server_config(tmp_path, token_env=None)))
    assert call(server.url + "/metrics")[0] == 200
    assert call(server.url + "/health/claude-agent")[0] == 200


@pytest.mark.integration
@pytest.mark.parametrize("how", ["token-variable", "config-variable"])
def test_start_http_server_without_config_still_honours_the_token(
    tmp_path, registry, servers, monkeypatch, how
):
    """``start_http_server(port)`` with no config argument reads the configuration as instrument() does
    (CLAUDE_EXPORTER_CONFIG, else the defaults, whose token_env is CLAUDE_EXPORTER_TOKEN): a token the
    operator set must not be silently ignored, leaving the endpoints open."""
    if how == "token-variable":
        monkeypatch.setenv("CLAUDE_EXPORTER_TOKEN", TOKEN)
    else:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        monkeypatch.setenv("CLAUDE_EXPORTER_CONFIG", str(server_config(tmp_path, token_file=str(token_file))))
    server = serve(servers, registry)
    status, headers, _ = call(server.url + "/metrics")
    assert_refused(status, headers)
    assert call(server.url + "/metrics", authorization=f"Bearer {TOKEN}")[0] == 200


# -- every endpoint ------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=[p for _, p, _ in ENDPOINTS])
def test_every_endpoint_needs_the_token(registry, servers, method, path, body):
    server = serve(servers, registry, token=TOKEN)
    url = server.url + path
    refusals = [
        None,
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer{TOKEN}",
    ]
    for authorization in refusals:
        status, headers, answer = call(url, method, body, authorization=authorization)
        assert status == 401, authorization
        assert_refused(status, headers)
        assert b"claude_" not in answer
    assert accepted_events(registry) == 0  # nothing refused was applied
    status, _, answer = call(url, method, body, authorization=f"Bearer {TOKEN}")
    assert status == 200, answer
    if path == "/v1/events":
        assert json.loads(answer) == {"accepted": 1}
        assert accepted_events(registry) == 1


@pytest.mark.integration
def test_unknown_paths_are_refused_before_they_are_looked_up(registry, servers):
    server = serve(servers, registry, token=TOKEN)
    status, headers, _ = call(server.url + "/nope")
    assert_refused(status, headers)
    assert call(server.url + "/nope", authorization=f"Bearer {TOKEN}")[0] == 404


@pytest.mark.integration
def test_liveness_needs_no_token(registry, servers):
    server = serve(servers, registry, token=TOKEN)
    status, _, body = call(server.url + "/-/healthy")
    assert status == 200
    assert body == b"OK\n"
    assert call(server.url + "/-/healthy", authorization="Bearer wrong")[0] == 200


@pytest.mark.integration
def test_the_bearer_scheme_is_case_insensitive(registry, servers):
    """RFC 7235 section 2.1: the authentication scheme name is case-insensitive."""
    server = serve(servers, registry, token=TOKEN)
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert call(server.url + "/metrics", authorization=f"{scheme} {TOKEN}")[0] == 200, scheme


# -- TLS -----------------------------------------------------------------------------------------------------


def verified(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


@pytest.mark.system
def test_tls_with_verification(certificate, registry, servers, fake_anthropic):
    cert, key = certificate
    server = serve(servers, registry, token=TOKEN, certfile=str(cert), keyfile=str(key))
    assert server.url.startswith("https://127.0.0.1:")
    fake_anthropic.script(Reply(input_tokens=5, output_tokens=6))
    fake_anthropic.client(max_retries=0).messages.create(model=MODEL, max_tokens=16, messages=USER)

    status, headers, body = call(
        server.url + "/metrics", authorization=f"Bearer {TOKEN}", context=verified(cert)
    )
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert f'claude_requests_total{{agent="default",model="{MODEL}",outcome="success"}} 1.0' in body.decode()
    status, headers, _ = call(server.url + "/metrics", context=verified(cert))
    assert_refused(status, headers)
    assert call(server.url + "/-/healthy", context=verified(cert))[0] == 200

    # The system's trust store does not know the certificate: verification really happens.
    with pytest.raises(urllib.error.URLError) as info:
        call(server.url + "/-/healthy", context=ssl.create_default_context())
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
    # Plain http to the TLS port gets no answer.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        call(server.url.replace("https://", "http://") + "/-/healthy")


@pytest.mark.system
def test_tls_and_token_file_from_the_config(tmp_path, certificate, registry, servers):
    cert, key = certificate
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = server_config(
        tmp_path, token_env=None, token_file=str(token_file), tls_cert_file=str(cert), tls_key_file=str(key)
    )
    server = serve(servers, registry, config=str(config))
    assert server.url.startswith("https://")
    context = verified(cert)
    health = server.url + "/health/claude-agent"
    assert call(health, authorization=f"Bearer {TOKEN}", context=context)[0] == 200
    assert call(health, context=context)[0] == 401


@pytest.mark.system
def test_tls_an_idle_connection_does_not_stall_the_server(certificate, registry, servers):
    """A client that connects and never starts the TLS handshake (a port scanner, a TCP health check)
    must not keep every other client from being served."""
    cert, key = certificate
    server = serve(servers, registry, token=TOKEN, certfile=str(cert), keyfile=str(key))
    idle = socket.create_connection(("127.0.0.1", server.port))
    try:
        time.sleep(0.1)
        status, _, _ = call(server.url + "/-/healthy", context=verified(cert), timeout=2.0)
        assert status == 200
    finally:
        idle.close()  # before the server's close(), which would otherwise wait on the stalled accept


# -- a real Prometheus scraping over https with a bearer token -----------------------------------------------


@pytest.mark.system
def test_real_prometheus_scrapes_over_https_with_the_token(
    tmp_path, certificate, registry, servers, fake_anthropic
):
    require_binary("prometheus")
    cert, key = certificate
    server = serve(servers, registry, token=TOKEN, certfile=str(cert), keyfile=str(key))
    fake_anthropic.script(Reply(input_tokens=7, output_tokens=8))
    fake_anthropic.client(max_retries=0).messages.create(model=MODEL, max_tokens=16, messages=USER)

    good, bad = tmp_path / "good-token", tmp_path / "bad-token"
    good.write_text(TOKEN + "\n")
    bad.write_text("wrong-token\n")
    target = f"127.0.0.1:{server.port}"

    def job(name: str, credentials: Path) -> dict[str, Any]:
        return {
            "job_name": name,
            "scheme": "https",
            "authorization": {"credentials_file": str(credentials)},
            "tls_config": {"ca_file": str(cert)},
            "static_configs": [{"targets": [target]}],
        }

    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [job("claude-good", good), job("claude-bad", bad)],
    }
    with Prometheus(yaml.safe_dump(config, sort_keys=False), tmp=tmp_path / "prom") as prom:
        try:
            prom.wait_for('up{job="claude-good"} == 1', timeout=60)
            [sample] = prom.wait_for(
                f'claude_requests_total{{job="claude-good",model="{MODEL}",outcome="success"}}', timeout=10
            )
            assert sample["value"][1] == "1"
            [output] = prom.wait_for('claude_tokens_total{job="claude-good",type="output"}', timeout=60)
            assert output["value"][1] == "8"
            prom.wait_for('up{job="claude-bad"} == 0', timeout=60)
            assert not prom.query('claude_exporter_build_info{job="claude-bad"}')
        except (TimeoutError, RuntimeError):
            print(prom.log())
            raise
        targets = prom.api("targets", state="active")["activeTargets"]
        by_job = {t["labels"]["job"]: t for t in targets}
        assert by_job["claude-good"]["health"] == "up"
        assert by_job["claude-good"]["scrapeUrl"] == f"https://{target}/metrics"
        assert by_job["claude-bad"]["health"] == "down"
        assert "401" in by_job["claude-bad"]["lastError"]
