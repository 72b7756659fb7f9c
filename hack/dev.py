#!/usr/bin/env python3
"""`make dev`: the whole platform locally, with the examples applied.

    python hack/dev.py up     # control plane (or $KUBECONFIG's cluster) + CRDs + Redis + examples
    python hack/dev.py down   # stop the local control plane

Running `up` twice is safe: every step is idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))

from localcluster import cluster  # noqa: E402
from localcluster.versions import cache_root  # noqa: E402
from localredis import server as localredis  # noqa: E402

# KAIZEN_DEV_DIR (with KAIZEN_CLUSTER_DIR) runs a second, private dev environment (tests).
DEV_DIR = Path(os.environ.get("KAIZEN_DEV_DIR") or cache_root() / "dev")
DEMO_NAMESPACE = "kaizen-demo"


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_background(name: str, argv: list[str]) -> tuple[int, Path]:
    """Run ``argv`` in the background once (pid file in the dev folder); its pid and log."""
    DEV_DIR.mkdir(parents=True, exist_ok=True)
    pid_file, log = DEV_DIR / f"{name}.pid", DEV_DIR / f"{name}.log"
    pid = _alive(pid_file)
    if pid:
        return pid, log
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid, log


def stop_background(name: str) -> None:
    """Stop a background process started by start_background, if running."""
    pid_file = DEV_DIR / f"{name}.pid"
    pid = _alive(pid_file)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(150):
            if _alive(pid_file) is None:
                break
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


def sample_call(url: str) -> str:
    """Ask the demo agent through a dev gateway (mock provider: no key needed)."""
    body = json.dumps(
        {"model": "hello-agent", "messages": [{"role": "user", "content": "Hello, Kaizen!"}]}
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"{url}/v1/chat/completions", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
        answer: str = json.loads(resp.read())["choices"][0]["message"]["content"]
        return answer


def wait_for_dev_gateway() -> str:
    """The dev Gateway's local URL once its process answers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            url = str(json.loads((DEV_DIR / "gateways" / "ports.json").read_text())["dev"])
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):  # noqa: S310 - loopback
                return url
        except (OSError, KeyError, ValueError):
            time.sleep(0.5)
    raise cluster.ClusterError(f"the dev gateway did not start; see {DEV_DIR / 'gateways'}")


def _apply_folder(kubeconfig: Path, folder: Path, namespace: str | None = None) -> list[str]:
    files = sorted(folder.glob("*.yaml"))
    if not files:
        return []
    args = ["apply", "--server-side", "--field-manager=kaizen-dev"]
    if namespace:
        args += ["-n", namespace]
    for f in files:
        args += ["-f", str(f)]
    return cluster.kubectl(kubeconfig, *args).splitlines()


def up() -> int:
    kubeconfig = cluster.ensure_cluster()
    crds = cluster.install_crds(kubeconfig, ROOT / "crds")
    namespace = cluster.kubectl(
        kubeconfig, "create", "namespace", DEMO_NAMESPACE, "--dry-run=client", "-o", "yaml"
    )
    cluster.kubectl(kubeconfig, "apply", "-f", "-", stdin=namespace)
    # Every namespace but the test suite's (t-*), whose tests run their own operator.
    pid, log = start_background(
        "operator",
        [
            "kaizen-operator",
            "--namespace",
            "!t-*",
            "--kubeconfig",
            str(kubeconfig),
            "--health-address",
            "127.0.0.1:18081",
            "--metrics-port",
            "19090",
            "--gateway-endpoints",
            str(DEV_DIR / "gateways" / "endpoints.json"),
            "--webhook-listen",
            "127.0.0.1:19443",
            "--webhook-name",
            "kaizen-operator-dev",
            # Test namespaces go through the test suite's own operators' webhooks.
            "--webhook-namespace-label",
            "!kaizen.studio/test-worker",
            # requestsPerSecond/latencyP95/errorRate ScalingPolicies (the example uses one).
            "--external-metrics",
            # The examples' production Ingress (docs/security.md, gateway policy).
            "--gateway-ingress-hosts",
            "*.example.com",
            "--gateway-ingress-classes",
            "nginx",
        ],
    )
    # The demo tool servers the example agent order-desk uses (MCP and http tools).
    start_background(
        "mcp-toolserver",
        [sys.executable, str(ROOT / "hack" / "toolserver" / "mcp_server.py"), "--port", "18931"],
    )
    start_background(
        "http-toolserver",
        [sys.executable, str(ROOT / "hack" / "upstream_stub" / "tools.py"), "--port", "18932"],
    )
    applied = _apply_folder(kubeconfig, ROOT / "examples", DEMO_NAMESPACE)
    for kind in ("agents", "gateways", "scalingpolicies"):
        cluster.kubectl(
            kubeconfig,
            "wait",
            "-n",
            DEMO_NAMESPACE,
            f"{kind}.kaizen.studio",
            "--all",
            "--for=condition=Ready",
            "--timeout=180s",
        )
    # Conversation memory and shared rate limits: the gateway processes the runner starts
    # inherit KAIZEN_REDIS_URL (in a cluster it comes from --gateway-redis-secret).
    redis_url = localredis.up(DEV_DIR / "redis")
    os.environ["KAIZEN_REDIS_URL"] = redis_url
    start_background(
        "gateways",
        [
            sys.executable,
            str(ROOT / "hack" / "devrunner.py"),
            "--namespace",
            DEMO_NAMESPACE,
            "--kubeconfig",
            str(kubeconfig),
            "--state",
            str(DEV_DIR / "gateways"),
        ],
    )
    facade_url = start_facade(kubeconfig)
    url = wait_for_dev_gateway()
    answer = sample_call(url)
    nodes = cluster.kubectl(kubeconfig, "get", "nodes", "--no-headers").splitlines()
    print(
        f"""
Kaizen Studio dev environment is up.
  cluster:     {cluster.status().get("apiserver", "external ($KUBECONFIG)")}
  nodes:       {len(nodes)} ({", ".join(line.split()[0] for line in nodes)})
  CRDs:        {len(crds)} applied
  examples:    {len(applied)} objects applied in namespace {DEMO_NAMESPACE}, all Ready
  operator:    pid {pid}, log {log}
               metrics http://127.0.0.1:19090/metrics, health http://127.0.0.1:18081/healthz

  console:     {console_line(facade_url)}
  facade:      {facade_url}/docs (kaizen-api, SQLite {DEV_DIR / "kaizen-api.db"})
               register, log in, create an org and workspace: see docs/facade.md

  gateways:    one local kaizen-gateway process per Gateway (kwok pods run no containers);
               URLs in {DEV_DIR / "gateways" / "ports.json"}; dev = {url}
  MCP tools:   demo MCP server http://127.0.0.1:18931/mcp (agent order-desk); {url}/readyz
  http tools:  demo endpoints http://127.0.0.1:18932 (agent order-desk's weather tool)
  redis:       {redis_url} (conversation memory, shared rate limits)

Ask the demo agent (mock provider, answered just now: {answer!r}):
  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "hello-agent", "messages": [{{"role": "user", "content": "Hi"}}]}}'
  python -c "import openai; c = openai.OpenAI(base_url='{url}/v1', api_key='-'); \\
print(c.chat.completions.create(model='hello-agent', \\
messages=[{{'role': 'user', 'content': 'Hi'}}]).choices[0].message.content)"
  # the example pipelines (examples/26-pipelines.yaml, docs/pipelines.md), every step shown:
  kaizen pipelines invoke support-router "Where is my invoice?" --url {url} --steps
  # hello-agent remembers a conversation you name (its stored turns: GET, forget: DELETE):
  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\
    -H 'x-kaizen-conversation-id: demo-1' \\
    -d '{{"model": "hello-agent", "messages": [{{"role": "user", "content": "I am Ada"}}]}}'
  curl -s {url}/agents/hello-agent/conversations/demo-1

  export KUBECONFIG={kubeconfig}
  kubectl get nodes
  # the example Promotion waits for an approver (the webhook records who approved):
  kubectl annotate promotion hello-agent-r1-to-staging -n {DEMO_NAMESPACE} \\
    kaizen.studio/approve="looks good" --as=jane --as-group=sre
  kubectl get kaizen -n {DEMO_NAMESPACE}

Stop it with: make dev-down
"""
    )
    return 0


def console_line(facade_url: str) -> str:
    """Where the web console is (the facade serves console/dist), or why it is not."""
    if (ROOT / "console" / "dist" / "index.html").is_file():
        return f"{facade_url}/ (the web console; docs/console.md)"
    return "not built: Node.js >= 20.19 is needed (docs/console.md)"


def start_facade(kubeconfig: Path) -> str:
    """The REST facade on 127.0.0.1:18000, with the ClusterRoles its workspaces bind."""
    from kaizen_api.server.tenancy import render_cluster_roles

    for role in render_cluster_roles():
        cluster.kubectl(
            kubeconfig,
            "apply",
            "--server-side",
            "--field-manager=kaizen-dev",
            "-f",
            "-",
            stdin=json.dumps(role),
        )
    os.environ["KUBECONFIG"] = str(kubeconfig)
    os.environ.setdefault("KAIZEN_DATABASE_URL", f"sqlite:///{DEV_DIR / 'kaizen-api.db'}")
    # On PostgreSQL, set KAIZEN_MIGRATION_DATABASE_URL to the owner's URL as well: the
    # facade then migrates as the owner and serves as KAIZEN_DATABASE_URL's runtime role
    # (docs/security.md). Both are passed through to the facade unchanged.
    keys = DEV_DIR / "jwt-keys"
    if not keys.exists():  # a stable signing key, so tokens survive a restart of the facade
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        keys.mkdir(parents=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (keys / "0001.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (keys / "0001.pem").chmod(0o600)
    os.environ["KAIZEN_JWT_KEY_DIR"] = str(keys)
    start_background("facade", ["kaizen-api", "--host", "127.0.0.1", "--port", "18000"])
    url = "http://127.0.0.1:18000"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):  # noqa: S310 - loopback
                return url
        except OSError:
            time.sleep(0.3)
    raise cluster.ClusterError(f"kaizen-api did not answer; see {DEV_DIR / 'facade.log'}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args()
    try:
        if args.command == "up":
            return up()
        stop_background("gateways")
        stop_background("mcp-toolserver")
        stop_background("http-toolserver")
        stop_background("facade")
        stop_background("operator")
        localredis.down(DEV_DIR / "redis")
        cluster.down()
        print("operator, Redis and local control plane stopped")
        return 0
    except cluster.ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
