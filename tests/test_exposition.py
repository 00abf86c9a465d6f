"""/metrics over real HTTP: every contract family with its type, `promtool check metrics` on a real scrape
and on label values that need escaping, OpenMetrics and gzip on request, bucket layouts, and /-/healthy."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import urllib.error
import urllib.request

import anthropic
import claude_exporter as ce
import pytest
from claude_exporter.testing import Reply, code_execution_blocks
from conftest import MODEL, UNKNOWN_MODEL, kw, scrape
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

# The contract's table: name as exposed -> type.
CONTRACT = {
    "claude_requests_total": "counter",
    "claude_request_duration_seconds": "histogram",
    "claude_time_to_first_token_seconds": "histogram",
    "claude_tokens_total": "counter",
    "claude_cost_usd_total": "counter",
    "claude_errors_total": "counter",
    "claude_stop_reasons_total": "counter",
    "claude_code_blocks_executed_total": "counter",
    "claude_retries_total": "counter",
    "claude_rate_limited_total": "counter",
    "claude_ratelimit_limit": "gauge",
    "claude_ratelimit_remaining": "gauge",
    "claude_ratelimit_reset_timestamp_seconds": "gauge",
    "claude_requests_in_flight": "gauge",
    "claude_executions_total": "counter",
    "claude_execution_duration_seconds": "histogram",
    "claude_execution_tokens": "histogram",
    "claude_execution_requests": "histogram",
    "claude_executions_in_flight": "gauge",
    "claude_execution_longest_running_seconds": "gauge",
    "claude_exporter_build_info": "gauge",
    "claude_exporter_label_overflow_total": "counter",
    "claude_exporter_unpriced_tokens_total": "counter",
    "claude_exporter_internal_errors_total": "counter",
    "claude_exporter_events_total": "counter",
    "claude_cache_misses_total": "counter",
    "claude_cache_missed_input_tokens_total": "counter",
    "claude_refusals_total": "counter",
    "claude_cache_savings_usd_total": "counter",
}
LABELS = {
    "claude_requests_total": {"agent", "model", "outcome"},
    "claude_request_duration_seconds_bucket": {"agent", "model", "le"},
    "claude_time_to_first_token_seconds_bucket": {"agent", "model", "le"},
    "claude_tokens_total": {"agent", "model", "type"},
    "claude_cost_usd_total": {"agent", "model"},
    "claude_errors_total": {"agent", "model", "error_type", "error_code"},
    "claude_stop_reasons_total": {"agent", "model", "stop_reason"},
    "claude_code_blocks_executed_total": {"agent", "model", "tool", "outcome"},
    "claude_retries_total": {"agent", "model", "reason", "error_code"},
    "claude_rate_limited_total": {"agent", "model", "error_code"},
    "claude_ratelimit_limit": {"model", "resource"},
    "claude_ratelimit_remaining": {"model", "resource"},
    "claude_ratelimit_reset_timestamp_seconds": {"model", "resource"},
    "claude_requests_in_flight": {"agent"},
    "claude_executions_total": {"agent", "task", "outcome"},
    "claude_execution_duration_seconds_bucket": {"agent", "task", "le"},
    "claude_execution_tokens_bucket": {"agent", "task", "type", "le"},
    "claude_execution_requests_bucket": {"agent", "task", "le"},
    "claude_executions_in_flight": {"agent", "task"},
    "claude_execution_longest_running_seconds": {"agent"},
    "claude_exporter_build_info": {"version", "anthropic_version"},
    "claude_exporter_label_overflow_total": {"label"},
    "claude_exporter_unpriced_tokens_total": {"model", "reason"},
    "claude_exporter_internal_errors_total": {"stage"},
    "claude_cache_misses_total": {"agent", "model", "reason"},
    "claude_cache_missed_input_tokens_total": {"agent", "model", "reason"},
    "claude_refusals_total": {"agent", "model", "category"},
    "claude_cache_savings_usd_total": {"agent", "model"},
}

DURATION_LE = [
    "0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12", "10.24", "20.48",
    "40.96", "81.92", "120.0", "300.0", "600.0",
]  # fmt: skip
TTFT_LE = [
    "0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5",
    "5.0", "7.5", "10.0", "+Inf",
]  # fmt: skip
TOKEN_LE = [repr(float(4**i)) for i in range(13)]


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def all_kinds_of_traffic(fake) -> None:
    """Requests that make every family of the contract produce samples."""
    fake.script(
        Reply(
            input_tokens=5,
            output_tokens=6,
            cache_creation_input_tokens=7,
            cache_read_input_tokens=8,
            content=code_execution_blocks("nonzero_exit", "bash_code_execution"),
        ),
        Reply(status=429, retry_after=0.01),
        Reply(
            stop_reason="refusal",
            stop_details={"type": "refusal", "category": "cyber"},
            diagnostics={"cache_miss_reason": {"type": "tools_changed", "cache_missed_input_tokens": 12}},
        ),
        Reply(status=529),
        Reply(text_deltas=3),
        Reply(),
    )
    client = fake.client(max_retries=1)
    with ce.execution("everything", agent="exposed"):
        client.messages.create(**kw())
        client.messages.create(**kw())  # 429, then a retry
        with pytest.raises(anthropic.OverloadedError):
            client.with_options(max_retries=0).messages.create(**kw())
        for _ in client.messages.create(**kw(), stream=True):
            pass
    client.messages.create(**kw(UNKNOWN_MODEL))
    # One more distinct stop reason than the open-label cap (64) takes: one label_overflow sample.
    fake.script(*(Reply(stop_reason=f"novel_{i}") for i in range(65)))
    for _ in range(65):
        client.messages.create(**kw())
    # Last response: rate-limit headers, one of them unparsable (an internal error, counted at scrape).
    fake.script(
        Reply(
            ratelimit={
                "requests": (50, 49, "2030-01-01T00:00:00Z"),
                "tokens": (1000, 900, "2030-01-01T00:00:00Z"),
                "input_tokens": (800, 700, "not-a-date"),
            }
        )
    )
    client.messages.create(**kw())


@pytest.mark.integration
def test_every_contract_family_with_its_type_and_labels(reg, fake_anthropic):
    all_kinds_of_traffic(fake_anthropic)
    scrape(reg)  # the bad rate-limit header is parsed, and its fault counted, at scrape time
    text = scrape(reg)
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
    for name, kind in CONTRACT.items():
        assert types.get(name) == kind, name
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
    for name, labels in LABELS.items():
        assert name in samples, f"{name} has no sample"
        for got in samples[name]:
            assert set(got) == labels, name


@pytest.mark.system
def test_promtool_check_metrics_on_a_real_scrape(reg, fake_anthropic, server):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is required for this test (install Prometheus' promtool on PATH)")
    all_kinds_of_traffic(fake_anthropic)
    status, headers, body = get(server.url + "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert b"claude_requests_total" in body
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert result.stdout.strip() == b"", result.stdout.decode()  # no lint warnings either


@pytest.mark.system
def test_promtool_reads_label_values_that_need_escaping(reg, fake_anthropic, server):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is required for this test (install Prometheus' promtool on PATH)")
    agents = {'say "hi"', "back\\slash", 'both \\" at once', "ünïcödé エージェント"}
    client = fake_anthropic.client(max_retries=0)
    for agent in agents:
        with ce.execution('t"1\\', agent=agent):
            client.messages.create(**kw())
    status, _, body = get(server.url + "/metrics")
    assert status == 200
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert result.stdout.strip() == b"", result.stdout.decode()
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    assert agents <= {s.labels["agent"] for s in families["claude_executions"].samples}
    assert {s.labels["task"] for s in families["claude_executions"].samples} == {'t"1\\'}


@pytest.mark.integration
def test_openmetrics_when_asked(reg, fake_anthropic, server):
    all_kinds_of_traffic(fake_anthropic)
    status, headers, body = get(
        server.url + "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"}
    )
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    parsed = {family.name: family for family in parse_openmetrics(text)}  # strict parser
    assert parsed["claude_requests"].type == "counter"
    assert parsed["claude_request_duration_seconds"].type == "histogram"
    got = [
        s.value
        for s in parsed["claude_requests"].samples
        if s.name == "claude_requests_total"
        and s.labels == {"agent": "exposed", "model": MODEL, "outcome": "success"}
    ]
    assert got == [3.0]
    # (promtool check metrics reads the Prometheus text format only: on OpenMetrics it misreads the HELP
    # of counters, so the strict OpenMetrics parser above is the check here.)


@pytest.mark.integration
def test_gzip_when_asked(reg, fake_anthropic, server):
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    status, headers, body = get(server.url + "/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers.get("content-encoding") == "gzip"
    text = gzip.decompress(body).decode()
    assert 'claude_requests_total{agent="default",model="claude-haiku-4-5",outcome="success"} 1.0' in text
    _, plain_headers, plain = get(server.url + "/metrics")
    assert "content-encoding" not in plain_headers
    assert b"claude_requests_total" in plain


@pytest.mark.integration
def test_healthy(server):
    status, _, body = get(server.url + "/-/healthy")
    assert status == 200
    assert body.strip().lower() == b"ok"


@pytest.mark.integration
def test_unknown_path_is_404(server):
    with pytest.raises(urllib.error.HTTPError) as info:
        get(server.url + "/nope")
    assert info.value.code == 404


@pytest.mark.integration
def test_scrape_sees_requests_over_http(reg, fake_anthropic, server):
    fake_anthropic.script(Reply(input_tokens=3))
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    _, _, body = get(server.url + "/metrics")
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    key = ("claude_tokens_total", (("agent", "default"), ("model", MODEL), ("type", "input")))
    assert values[key] == 3


@pytest.mark.integration
def test_bucket_layouts(reg, fake_anthropic):
    for _ in fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True):
        pass
    les: dict[str, list[str]] = {}
    for family in text_string_to_metric_families(scrape(reg)):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                key = sample.name + str(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                les.setdefault(key, []).append(sample.labels["le"])

    def layout(prefix: str) -> list[str]:
        found = [v for k, v in les.items() if k.startswith(prefix)]
        assert found, prefix
        return found[0]

    # Durations: the GenAI doubling buckets, the long tail, and every configured execution-timeout
    # threshold (the default execution_timeout alert is 30000 ms, hence 30.0).
    expected_duration = [*sorted([*DURATION_LE, "30.0"], key=float), "+Inf"]
    assert layout("claude_request_duration_seconds_bucket") == expected_duration
    assert layout("claude_execution_duration_seconds_bucket") == expected_duration
    assert layout("claude_time_to_first_token_seconds_bucket") == TTFT_LE
    token_le = layout("claude_execution_tokens_bucket")
    assert [float(v) for v in token_le[:-1]] == [float(v) for v in TOKEN_LE]
    assert token_le[-1] == "+Inf"


@pytest.mark.integration
def test_timeout_threshold_from_config_is_a_bucket(fake_anthropic):
    from claude_exporter.config import parse_config
    from claude_exporter.recording.state import ACTIVE
    from prometheus_client import CollectorRegistry

    config = parse_config(
        {"monitoring": {"slow": {"alerts": [{"name": "execution_timeout", "threshold_ms": 45000}]}}}
    )
    registry = CollectorRegistry()
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    try:
        ce.instrument(config, registry=registry)
        with ce.execution("t", agent="slow"):
            fake_anthropic.client(max_retries=0).messages.create(**kw())
        labels = {"agent": "slow", "task": "t", "le": "45.0"}
        assert registry.get_sample_value("claude_execution_duration_seconds_bucket", labels) == 1
        labels = {"agent": "slow", "model": MODEL, "le": "45.0"}
        assert registry.get_sample_value("claude_request_duration_seconds_bucket", labels) == 1
    finally:
        ce.uninstrument()
