"""Pure parts of the local control plane: certificates and command lines."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from localcluster import cluster, components, manifests, pki


def test_client_certificate_carries_user_and_groups(tmp_path: Path) -> None:
    ca = pki.create_ca(tmp_path, "ca")
    pair = pki.issue(ca, tmp_path, "bob", common_name="bob", organizations=("team-a", "team-b"))
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bob"
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["team-a", "team-b"]
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600"


def test_existing_certificates_are_reused(tmp_path: Path) -> None:
    ca = pki.create_ca(tmp_path, "ca")
    first = pki.issue(ca, tmp_path, "x", common_name="x").cert.read_bytes()
    assert pki.issue(ca, tmp_path, "x", common_name="x").cert.read_bytes() == first


def test_every_process_listens_on_loopback_only(tmp_path: Path) -> None:
    lay = components.Layout(
        root=tmp_path,
        bin=tmp_path / "bin",
        kwok_config=tmp_path,
        ports=dict.fromkeys(cluster.PORT_NAMES, 1),
    )
    for name, build in components.PROCESSES.items():
        argv = build(lay)
        assert argv[0] == str(tmp_path / "bin" / name)
        addresses = [a for a in argv if "address=" in a or "urls=" in a]
        assert addresses, name
        for arg in addresses:
            value = arg.split("=", 1)[1]
            assert "127.0.0.1" in value or value.startswith("InternalIP"), arg


def test_kwok_nodes_point_metrics_server_at_their_own_metrics_path() -> None:
    node = manifests.kwok_node("n1")
    assert node["metadata"]["annotations"]["metrics.k8s.io/resource-metrics-path"] == (
        "/metrics/nodes/n1/metrics/resource"
    )
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
