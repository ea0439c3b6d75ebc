"""Fast checks of the e2e stack's pure parts: versions, PKI, image tags, the operator overlay, container IDs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from e2e import build, images, pki
from e2e import node as real_node
from e2e import operator as goodput
from e2e.stack import Stack


def test_versions_come_from_the_go_modules() -> None:
    assert build.kube_version().startswith("v1.")
    assert build.prometheus_version().startswith("v3.")
    flags = build.kube_ldflags("v1.34.4")
    assert "k8s.io/component-base/version.gitVersion=v1.34.4" in flags
    assert "k8s.io/client-go/pkg/version.gitMinor=34" in flags
    assert all(t.path.is_relative_to(build.CACHE_ROOT) for t in build.targets())


def test_pki_issues_leaf_certs_signed_by_the_ca(tmp_path: Path) -> None:
    creds = pki.generate(tmp_path, ("198.19.0.1",))
    ca = x509.load_pem_x509_certificate(creds.ca.cert.read_bytes())
    serving = x509.load_pem_x509_certificate(creds.serving.cert.read_bytes())
    admin = x509.load_pem_x509_certificate(creds.admin.cert.read_bytes())
    for leaf in (serving, admin):
        leaf.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert admin.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert creds.sa_private.stat().st_mode & 0o777 == 0o600
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert ips == ["127.0.0.1", "198.19.0.1"]
    kubelet = x509.load_pem_x509_certificate(
        pki.issue(creds, "kubelet", "node", None, ("198.18.0.1",)).cert.read_bytes()
    )
    kubelet.verify_directly_issued_by(ca)
    kubelet_sans = kubelet.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in kubelet_sans.get_values_for_type(x509.IPAddress)] == ["198.18.0.1"]


@pytest.mark.parametrize("image", [images.OPERATOR, images.WORKER], ids=lambda i: i.name)
def test_every_file_a_containerfile_copies_is_an_input_of_its_digest(image: images.Image) -> None:
    """A copied file left out of the inputs would let a change to it reuse a stale image."""
    assert image.containerfile is not None
    hashed = set(images.files(image))
    for line in image.containerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                path = images.REPO / source
                copied = list(path.rglob("*.py")) if path.is_dir() else [path]
                assert set(copied) <= hashed, f"{image.containerfile.name} copies {source}, not in its inputs"


def test_image_tags_carry_the_version_and_a_digest_of_every_input(tmp_path: Path) -> None:
    operator = images.tag(images.OPERATOR)
    assert operator.startswith(f"ghcr.io/goodput/operator:{images.version()}-")
    assert images.tag(images.OPERATOR) == operator  # stable while nothing changes
    moved = images.Image(
        "ghcr.io/goodput/operator", images.OPERATOR.containerfile, ("crds",), images.BASE.name
    )
    assert images.tag(moved) != operator  # another set of inputs, another digest
    based = [images.tag(i) for i in images.IMAGES if i.base == images.BASE.name]
    assert all(images.digest(images.BASE) != t.rsplit("-", 1)[1] for t in based)
    older = [operator.rsplit("-", 1)[0] + "-000000000000", operator, "ghcr.io/goodput/worker:0.1.0-1"]
    assert images.stale_tags(images.OPERATOR, older) == [older[0]]


def stack_at(tmp_path: Path) -> Stack:
    return Stack(
        state_dir=tmp_path,
        kubeconfig=tmp_path / "kubeconfig",
        server="https://198.18.7.1:6443",
        version="v1.34.4",
        prometheus_url="http://198.18.7.1:9090",
        start_seconds=0.0,
        pids={},
        ports={},
        nodes=["goodput-node"],
        network=7,
        images={goodput.OPERATOR_IMAGE: "ghcr.io/goodput/operator:0.1.0-abc"},
    )


def test_overlay_runs_the_operator_image_against_the_stack(tmp_path: Path) -> None:
    """The image's own command and PYTHONPATH (/app) stay; only image, the API's address and settings change."""
    directory = goodput.write_overlay(stack_at(tmp_path), goodput.OperatorSettings())
    patch = yaml.safe_load(
        yaml.safe_load((directory / "kustomization.yaml").read_text())["patches"][0]["patch"]
    )
    by_path = {op["path"]: op["value"] for op in patch}
    container = "/spec/template/spec/containers/0"
    assert by_path[f"{container}/image"] == "ghcr.io/goodput/operator:0.1.0-abc"
    assert by_path[f"{container}/imagePullPolicy"] == "Never"
    assert by_path["/spec/template/spec/hostAliases"][0]["ip"] == "198.19.7.1"
    assert not any(path.endswith(("/command", "/ports/0/containerPort")) for path in by_path)
    values = [op["value"] for op in patch if "/env/" in op["path"]]
    assert "http://198.18.7.1:9090" in values and not any("PYTHONPATH" in str(v) for v in values)


def test_container_pid_asks_containerd_for_the_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, ...]] = []

    def crictl(socket: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        asked.append(args)
        return subprocess.CompletedProcess(args, 0, json.dumps({"info": {"pid": 4242}}), "")

    monkeypatch.setattr(real_node, "crictl", crictl)
    assert stack_at(tmp_path).container_pid("containerd://c0ffee") == 4242
    assert asked == [("inspect", "--output=json", "c0ffee")]
    with pytest.raises(ValueError, match="containerID 'process://1234'"):
        stack_at(tmp_path).container_pid("process://1234")
