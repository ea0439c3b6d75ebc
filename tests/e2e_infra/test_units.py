"""Fast checks of the e2e stack's pure parts: $(VAR) expansion, mount rewriting, fit, versions, PKI."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from e2e import build, images, pki
from e2e.kubelet import IMAGE_ROOT, Kubelet, PodRecord, expand


def kubelet(tmp_path: Path) -> Kubelet:
    capacity = {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2", "pods": "3"}
    return Kubelet(None, tmp_path, "node-a", capacity, {"pool": "h100"})  # type: ignore[arg-type]


def pod(cpu: str = "1", gpus: str | None = None, selector: dict[str, str] | None = None) -> dict:
    requests = {"cpu": cpu} | ({"nvidia.com/gpu": gpus} if gpus else {})
    container = {"name": "c", "resources": {"requests": requests}}
    return {"spec": {"containers": [container], "nodeSelector": selector or {}}}


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING) $$(A) $$", env) == "$(MISSING) $(A) $"


def test_unfit_checks_selector_resources_and_pod_count(tmp_path: Path) -> None:
    k = kubelet(tmp_path)
    assert k.unfit(pod(gpus="2", selector={"pool": "h100"}), []) == ""
    assert "selector" in k.unfit(pod(selector={"pool": "l4"}), [])
    assert k.unfit(pod(gpus="1"), [pod(gpus="2")]).endswith("Insufficient nvidia.com/gpu.")
    assert k.unfit(pod(cpu="500m"), [pod(cpu="3"), pod(cpu="600m")]).endswith("Insufficient cpu.")
    assert "Too many pods" in k.unfit(pod(cpu="0"), [pod(cpu="0")] * 3)


def test_rewrite_maps_mount_paths_at_path_boundaries(tmp_path: Path) -> None:
    k = kubelet(tmp_path)
    rec = PodRecord("uid", "ns", "p", "127.0.0.2", tmp_path, "", [], mounts={"cfg": tmp_path / "cfg"})
    spec = {"volumeMounts": [{"name": "cfg", "mountPath": "/etc/goodput"}]}
    assert k.rewrite(rec, spec, "--config=/etc/goodput/engine.yaml") == f"--config={tmp_path}/cfg/engine.yaml"
    assert k.rewrite(rec, spec, "/etc/goodput") == f"{tmp_path}/cfg"
    assert k.rewrite(rec, spec, "/etc/goodputx/a") == "/etc/goodputx/a"


def test_rewrite_leaves_the_checkout_alone_under_a_mounted_parent(tmp_path: Path) -> None:
    """A clone under /tmp runs its operator from there although the pod mounts an emptyDir at /tmp."""
    k = kubelet(tmp_path)
    rec = PodRecord("uid", "ns", "p", "127.0.0.2", tmp_path, "", [], mounts={"tmp": tmp_path / "tmp"})
    parent = str(Path(IMAGE_ROOT).parent)
    spec = {"volumeMounts": [{"name": "tmp", "mountPath": parent}]}
    script = f"{IMAGE_ROOT}/operator/main.py"
    assert k.rewrite(rec, spec, script) == script
    assert k.rewrite(rec, spec, f"{parent}/scratch") == f"{tmp_path}/tmp/scratch"


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
