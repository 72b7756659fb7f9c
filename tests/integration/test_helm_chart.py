"""The Helm chart: lint, golden renders (cluster and namespaced scope), values the
schema refuses with a clear message, install/upgrade/uninstall on the real control
plane, and the operator run with the chart's own command, ServiceAccount and RBAC
reconciling an example (proof that the chart's RBAC is enough)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from localcluster.versions import KUBERNETES_VERSION, bin_dir
from tests.e2e.test_operator_reconciles import gateway, mock_agent
from tests.support.kube import eventually, kubectl, token_kubeconfig
from tests.support.manifests import ROOT
from tests.support.processes import free_port, start, wait_http_ok

CHART = ROOT / "charts" / "kaizen-studio"
GOLDEN = ROOT / "tests" / "golden"
HELM = bin_dir() / "helm"
KUBE_VERSION = KUBERNETES_VERSION.lstrip("v")
NAMESPACED = ["--set", "scope=namespaced", "--set", "watchNamespaces={team-a,team-b}"]


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    home = bin_dir().parent / "helm-home"  # helm's own caches, not the user's
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=check, env=env)


def render(*values: str) -> str:
    out = helm(
        "template",
        "kaizen",
        str(CHART),
        "-n",
        "kaizen-system",
        "--kube-version",
        KUBE_VERSION,
        *values,
    ).stdout
    # Certificates are generated per render: compare everything else.
    return re.sub(r"(ca\.crt|tls\.crt|tls\.key|caBundle): \S+", r"\1: <generated>", out)


def test_lint_passes() -> None:
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(("name", "values"), [("default", []), ("namespaced", NAMESPACED)])
def test_renders_match_the_golden_files(name: str, values: list[str]) -> None:
    rendered = render(*values)
    golden = GOLDEN / f"chart-{name}.yaml"
    if os.environ.get("KAIZEN_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text(), (
        f"re-render with KAIZEN_UPDATE_GOLDEN=1 and review {golden}"
    )


def test_rendered_objects_are_hardened_and_scoped() -> None:
    docs = [d for d in yaml.safe_load_all(render(*NAMESPACED)) if d]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    for deployment in by_kind["Deployment"]:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] and security["runAsNonRoot"]
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["livenessProbe"] and container["readinessProbe"]
        assert container["resources"]["requests"]
    operator = next(d for d in by_kind["Deployment"] if d["metadata"]["name"].endswith("-operator"))
    assert operator["spec"]["replicas"] == 2
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (
        "--leader-elect" in args and "--namespace=team-a" in args and "--all-namespaces" not in args
    )
    # Namespaced scope: no cluster-wide rights on workloads, a Role per watched namespace.
    op_roles = [r for r in by_kind["Role"] if r["metadata"]["name"] == "kaizen-operator"]
    assert sorted(r["metadata"]["namespace"] for r in op_roles) == ["team-a", "team-b"]
    assert not [r for r in by_kind["ClusterRole"] if r["metadata"]["name"] == "kaizen-operator"]
    webhook = by_kind["MutatingWebhookConfiguration"][0]["webhooks"][0]
    assert webhook["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]
    assert {"PodDisruptionBudget", "APIService", "Secret", "ServiceAccount"} <= set(by_kind)


def test_the_aggregated_roles_are_the_ones_the_facade_binds() -> None:
    from kaizen_api.v1alpha1.rbac import render_cluster_roles

    docs = [d for d in yaml.safe_load_all(render()) if d and d["kind"] == "ClusterRole"]
    shipped = {
        d["metadata"]["name"]: d["rules"]
        for d in docs
        if d["metadata"]["name"].startswith("kaizen-")
        and not d["metadata"]["name"].startswith("kaizen-kaizen")
    }
    expected = {r["metadata"]["name"]: r["rules"] for r in render_cluster_roles({})}
    assert {k: v for k, v in shipped.items() if k in expected} == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["--set", "scope=everywhere"],
            "at '/scope': value must be one of 'cluster', 'namespaced'",
        ),
        (["--set", "scope=namespaced"], "at '/watchNamespaces': minItems: got 0, want 1"),
        (["--set", "api.replicas=3"], "at '/api/replicas': maximum: got 3, want 1"),
        (["--set", "operator.replicas=0"], "at '/operator/replicas': minimum: got 0, want 1"),
        (
            ["--set", "api.auditRetentionDays=30"],
            "at '/api/auditRetentionDays': minimum: got 30, want 90",
        ),
        (["--set", "operator.typo=1"], "additional properties 'typo' not allowed"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(values: list[str], message: str) -> None:
    result = helm(
        "template", "kaizen", str(CHART), "--kube-version", KUBE_VERSION, *values, check=False
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.fixture
def helm_namespaces(api_client: client.ApiClient) -> Iterator[tuple[str, str]]:
    """A release namespace and a watched one, outside every test operator's scope."""
    suffix = uuid.uuid4().hex[:6]
    names = (f"t-helm-sys-{suffix}", f"t-helm-app-{suffix}")
    core = client.CoreV1Api(api_client)
    for ns in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    yield names
    for ns in names:
        core.delete_namespace(ns, propagation_policy="Background")


def test_install_upgrade_run_the_chart_operator_and_uninstall(
    crds: Path, api_client: client.ApiClient, helm_namespaces: tuple[str, str], tmp_path: Path
) -> None:
    system, app = helm_namespaces
    release = f"k{system[-6:]}"
    values = [
        "--set",
        "scope=namespaced",
        "--set",
        f"watchNamespaces={{{app}}}",
        # cluster-wide singletons other tests own: the roles and the external metrics API
        "--set",
        "aggregatedRoles=false",
        "--set",
        "operator.externalMetrics=false",
    ]
    try:
        installed = helm(
            "install",
            release,
            str(CHART),
            "-n",
            system,
            "--wait",
            "--timeout",
            "120s",
            *values,
            kubeconfig=crds,
        )
        assert "STATUS: deployed" in installed.stdout
        assert "Next steps" in installed.stdout  # NOTES.txt
        apps = client.AppsV1Api(api_client)
        operator_name = f"{release}-kaizen-operator"
        deployment = apps.read_namespaced_deployment(operator_name, system)
        assert deployment.status.ready_replicas == 2  # kwok runs the pods

        upgraded = helm(
            "upgrade",
            release,
            str(CHART),
            "-n",
            system,
            "--wait",
            *values,
            "--set",
            "operator.replicas=3",
            kubeconfig=crds,
        )
        assert "STATUS: deployed" in upgraded.stdout
        assert apps.read_namespaced_deployment(operator_name, system).spec.replicas == 3

        _run_chart_operator(crds, api_client, system, app, release, tmp_path)
    finally:
        helm("uninstall", release, "-n", system, "--wait", kubeconfig=crds, check=False)
    assert helm("status", release, "-n", system, kubeconfig=crds, check=False).returncode != 0
    leftovers = kubectl(
        crds, "get", "mutatingwebhookconfiguration", f"{release}-kaizen-operator", check=False
    )
    assert leftovers.returncode != 0


def _run_chart_operator(
    kubeconfig: Path,
    api_client: client.ApiClient,
    system: str,
    app: str,
    release: str,
    tmp_path: Path,
) -> None:
    """The exact container command and args of the rendered operator Deployment, run as a
    local process with the chart ServiceAccount's token: only the chart's RBAC applies."""
    apps = client.AppsV1Api(api_client)
    name = f"{release}-kaizen-operator"
    container = apps.read_namespaced_deployment(name, system).spec.template.spec.containers[0]
    token = kubectl(
        kubeconfig, "create", "token", name, "-n", system, "--duration=1h"
    ).stdout.strip()
    sa_kubeconfig = token_kubeconfig(kubeconfig, token, tmp_path / "sa.kubeconfig")
    secret = client.CoreV1Api(api_client).read_namespaced_secret(f"{name}-webhook-tls", system)
    certs = tmp_path / "webhook"
    certs.mkdir()
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (certs / key).write_bytes(base64.b64decode(secret.data[key]))
    health, metrics, https = free_port(), free_port(), free_port()
    local = {  # the pod's addresses and mounts, as a local process has them
        "--health-address": f"127.0.0.1:{health}",
        "--metrics-port": str(metrics),
        "--webhook-listen": f"127.0.0.1:{https}",
        "--webhook-cert-dir": str(certs),
        "--leader-election-namespace": system,
    }
    args = []
    for arg in container.args:
        flag = arg.split("=", 1)[0]
        args.append(f"{flag}={local[flag]}" if flag in local else arg)
    assert container.command == ["kaizen-operator"]
    process = start(
        [*container.command, *args, "--kubeconfig", str(sa_kubeconfig)],
        tmp_path / "operator.log",
        {"KAIZEN_OPERATOR_IDENTITY": "chart-test"},
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{health}/healthz", process)
        docs = [mock_agent("hello"), gateway("dev", "dev", ["hello"])]
        kubectl(
            kubeconfig,
            "apply",
            "-n",
            app,
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        )
        custom = client.CustomObjectsApi(api_client)

        def ready(plural: str, obj: str) -> bool:
            body = custom.get_namespaced_custom_object(
                "kaizen.studio", "v1alpha1", app, plural, obj
            )
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (body.get("status") or {}).get("conditions", [])
            )

        eventually(lambda: ready("agents", "hello"), what="the Agent Ready", timeout=60)
        eventually(lambda: ready("gateways", "dev"), what="the Gateway Ready", timeout=90)
        assert "forbidden" not in process.log.read_text().lower(), process.tail(30)
        lease = client.CoordinationV1Api(api_client).read_namespaced_lease(
            "kaizen-operator", system
        )
        assert lease.spec.holder_identity == "chart-test"
    finally:
        process.stop()


def test_optional_monitoring_renders_a_service_monitor_and_a_dashboard() -> None:
    docs = [
        d
        for d in yaml.safe_load_all(
            render(
                "--set",
                "metrics.serviceMonitor.enabled=true",
                "--set",
                "metrics.dashboard.enabled=true",
                "--set",
                "api.ingress.enabled=true",
                "--set",
                "api.ingress.host=kaizen.example.com",
            )
        )
        if d
    ]
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]
    dashboard = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    )
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(dashboard["data"]["kaizen-studio.json"])["panels"]
    assert any("kaizen_gateway_requests_total" in p["targets"][0]["expr"] for p in panels)
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "kaizen.example.com"


def test_the_ssrf_allowances_are_off_unless_the_values_turn_them_on() -> None:
    def operator_args(*values: str) -> list[str]:
        docs = [d for d in yaml.safe_load_all(render(*values)) if d]
        operator = next(
            d
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
        )
        args: list[str] = operator["spec"]["template"]["spec"]["containers"][0]["args"]
        return args

    assert not [a for a in operator_args() if a.startswith("--allow-link-local")]
    allowed = operator_args(
        "--set",
        "operator.allowLinkLocalDestinations=true",
        "--set",
        "operator.allowLinkLocalUpstreams=true",
    )
    assert {"--allow-link-local-destinations", "--allow-link-local-upstreams"} <= set(allowed)
    # and the operator accepts exactly those flags
    for flag in ("--allow-link-local-destinations", "--allow-link-local-upstreams"):
        help_text = subprocess.run(
            ["kaizen-operator", "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert flag in help_text


def operator_args(docs: list[dict[str, Any]]) -> list[str]:
    """The operator container's command-line arguments in rendered chart documents."""
    operator = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    )
    args: list[str] = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_gateway_redis_is_off_unless_the_values_name_a_secret_or_run_one() -> None:
    def rendered(*values: str) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(render(*values)) if d]

    plain = rendered()
    assert not [a for a in operator_args(plain) if a.startswith("--gateway-redis")]
    assert not [d for d in plain if d["metadata"]["name"].endswith("-redis")]

    docs = rendered(
        "--set",
        "gatewayRedis.secretName=kaizen-redis",
        "--set",
        "gatewayRedis.inChart.enabled=true",
    )
    assert "--gateway-redis-secret=kaizen-redis" in operator_args(docs)
    redis = {d["kind"]: d for d in docs if d["metadata"]["name"] == "kaizen-redis"}
    assert set(redis) == {"Deployment", "Service", "NetworkPolicy"}
    container = redis["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert container["resources"]["requests"]
    # Only gateway pods (any namespace) may connect.
    source = redis["NetworkPolicy"]["spec"]["ingress"][0]["from"][0]
    assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kaizen-gateway"}
    assert redis["Service"]["spec"]["ports"][0]["port"] == 6379
    help_text = subprocess.run(
        ["kaizen-operator", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--gateway-redis-secret" in help_text
    assert "--gateway-otlp-endpoint" in help_text


def test_gateway_traces_go_to_the_collector_the_chart_names() -> None:
    def args(*values: str) -> list[str]:
        return operator_args([d for d in yaml.safe_load_all(render(*values)) if d])

    assert not [a for a in args() if a.startswith("--gateway-otlp")]
    endpoint = "http://otel-collector.observability.svc:4318"
    assert f"--gateway-otlp-endpoint={endpoint}" in args(
        "--set", f"gatewayTracing.otlpEndpoint={endpoint}"
    )
