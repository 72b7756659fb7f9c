"""Shared fixtures: one control plane per pytest session, one namespace per test,
PostgreSQL and SQLite databases, Redis. Tests are marked by folder (unit/integration/e2e)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from localcluster import cluster
from localdb import postgres
from localredis import server as localredis
from tests.reliability.figures import Figures, figures_file, table
from tests.support.kube import install_crds
from tests.support.processes import LocalProcess, start_operator


@dataclass
class OperatorHandle:
    """The test session's operator process."""

    process: LocalProcess
    metrics_port: int
    endpoints: Path  # devrunner endpoint files the operator reads (--gateway-endpoints)


TIERS = ("unit", "integration", "e2e", "reliability", "security")
WORKER_LABEL = "kaizen.studio/test-worker"  # routes Promotion webhooks to this worker's operator


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller, not an xdist worker
        figures_file().unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    text = table()  # what the reliability suite measured in this run
    if text:
        terminalreporter.section("reliability figures")
        terminalreporter.write_line(text)
        terminalreporter.write_line(f"(also in {figures_file()})")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


# ------------------------------------------------------------------ Kubernetes


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    """The cluster under test: $KUBECONFIG's when set, else the local control plane."""
    try:
        return cluster.ensure_cluster()
    except cluster.ClusterError as exc:
        pytest.fail(f"no Kubernetes cluster for the tests: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> client.ApiClient:
    """A cluster-admin client (the local cluster's admin certificate)."""
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="session")
def crds(kubeconfig: Path) -> Path:
    """The cluster with Kaizen Studio's generated CRDs installed."""
    install_crds(kubeconfig)
    return kubeconfig


def worker_id(config: pytest.Config) -> str:
    """This pytest-xdist worker's id (gw0, gw1, ...), or "main" without xdist."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "main"


@pytest.fixture(scope="session")
def operator(
    crds: Path, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorHandle]:
    """One `kaizen-operator` process per worker, watching only that worker's namespaces."""
    worker = worker_id(request.config)
    folder = tmp_path_factory.mktemp("operator")
    endpoints = folder / "endpoints"
    endpoints.mkdir()
    proc, metrics_port = start_operator(
        crds,
        f"t-{worker}-*",
        folder / "operator.log",
        f"{WORKER_LABEL}={worker}",
        endpoints,
        # The examples' production Ingress and the route tests' hosts; the rest of the
        # gateway policy is the default (tests/security/test_h2_gateway_workloads.py).
        extra_args=[
            "--gateway-ingress-hosts",
            "*.example.com",
            "--gateway-ingress-classes",
            "nginx",
        ],
    )
    handle = OperatorHandle(proc, metrics_port, endpoints)
    yield handle
    handle.process.stop()


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (prefixed by the xdist worker)."""
    short = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:36]
    name = f"t-{worker_id(request.config)}-{short.strip('-')}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api_client)
    labels = {WORKER_LABEL: worker_id(request.config)}
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def own_namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace outside the session operators' t-<worker>-* scope, for a test that
    runs its own operator or client and wants no other actor; deleted afterwards."""
    prefix = request.node.name.removeprefix("test_").split("_")[0][:12]
    ns = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    yield ns
    core.delete_namespace(ns, propagation_policy="Background")


def impersonating(api_client: client.ApiClient, user: str) -> client.ApiClient:
    """A client that acts as ``user`` through impersonation (admins may impersonate)."""
    other = client.ApiClient(api_client.configuration)
    other.set_default_header("Impersonate-User", user)
    return other


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    # A failing cluster test shows the control plane's and operator's recent logs.
    fixtures = getattr(item, "fixturenames", ())
    if report.failed and "kubeconfig" in fixtures and not os.environ.get("KUBECONFIG"):
        report.sections.append(("local control plane logs", cluster.tail_logs(lines=8)))
    if report.failed and "operator" in fixtures:
        handle = getattr(item, "funcargs", {}).get("operator")
        if handle is not None:
            report.sections.append(("operator log", handle.process.tail(60)))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Record a measured figure for the reliability table: ``figures.record("p99", 12, "ms")``."""
    return Figures(request.node.name)


# ------------------------------------------------------------------ databases


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """Superuser URL of a real PostgreSQL server ($KAIZEN_TEST_POSTGRES_URL or a local one)."""
    return os.environ.get("KAIZEN_TEST_POSTGRES_URL") or postgres.up()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a real Redis server ($KAIZEN_TEST_REDIS_URL or a local redis-server)."""
    return os.environ.get("KAIZEN_TEST_REDIS_URL") or localredis.up()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database per test, once on SQLite (a file) and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kaizen.db'}"
        return
    admin = request.getfixturevalue("postgres_admin_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(admin, name)
    yield url
    postgres.drop_database(admin, name)


# ------------------------------------------------------------------ REST facade


@pytest.fixture(scope="session")
def facade_cluster(crds: Path) -> Path:
    """The cluster with the aggregated kaizen-viewer/developer/admin ClusterRoles."""
    import json

    from kaizen_api.server.tenancy import render_cluster_roles
    from tests.support.kube import kubectl

    for role in render_cluster_roles():
        kubectl(
            crds,
            "apply",
            "--server-side",
            "--field-manager=kaizen-tests",
            "-f",
            "-",
            stdin=json.dumps(role),
        )
    return crds


@pytest.fixture
def facade(facade_cluster: Path, database_url: str, api_client: client.ApiClient) -> Iterator[Any]:
    """The REST facade (in process) on a fresh database, against the real apiserver;
    the namespaces of the organizations a test made are deleted afterwards."""
    from fastapi.testclient import TestClient

    from kaizen_api.server.app import create_app
    from kaizen_api.server.settings import Settings
    from tests.support.facade import Facade

    # Tests choose any plan for their organizations (by default only "free" is
    # self-service; tests/security/test_m8_plans.py checks that default).
    settings = Settings(
        database_url=database_url,
        kubeconfig=str(facade_cluster),
        self_service_plans="free,pro,enterprise",
    )
    with TestClient(create_app(settings)) as test_client:
        handle = Facade(test_client)
        yield handle
    core = client.CoreV1Api(api_client)
    for org in handle.created_orgs:
        for ns in core.list_namespace(label_selector=f"kaizen.studio/org={org}").items:
            core.delete_namespace(ns.metadata.name, propagation_policy="Background")
