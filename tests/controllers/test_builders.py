"""The children the operator builds, as tables of input → the fields that matter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.utils.quantity import parse_quantity

from goodput.controllers import builders, naming
from goodput.controllers.builders import Owner
from goodput.crds.inferenceservice import SecretKeyRef, WorkerSpec

REPO = Path(__file__).resolve().parents[2]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _deployments(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in children if c["kind"] == "Deployment"]


@pytest.mark.parametrize(
    ("example", "accelerator", "tp", "gpus", "node_selector", "device"),
    [
        ("tiny-cpu.yaml", "CPU", 1, None, None, "cpu"),
        ("chat-llama3-8b.yaml", "L40S", 1, "1", {"nvidia.com/gpu.product": "NVIDIA-L40S"}, "cuda"),
        (
            "chat-llama3-8b.yaml",
            "H100-SXM",
            4,
            "4",
            {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "cuda",
        ),
    ],
)
def test_accelerator_shapes_the_pod(
    owner: Owner,
    example_spec: Any,
    make_plan: Any,
    example: str,
    accelerator: str,
    tp: int,
    gpus: str | None,
    node_selector: Any,
    device: str,
) -> None:
    spec = example_spec(example)
    plan = make_plan(accelerator=accelerator, tp=tp)
    children = builders.build_children(owner, spec, plan)
    (deployment,) = _deployments(children)
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert container["resources"]["limits"].get("nvidia.com/gpu") == gpus
    assert pod.get("nodeSelector") == node_selector
    assert ("tolerations" in pod) == (gpus is not None)
    assert any(v["name"] == "dshm" for v in pod["volumes"]) == (tp > 1)
    config_map = children[0]
    assert config_map["kind"] == "ConfigMap"
    assert config_map["data"]["GOODPUT_DEVICE"] == device
    assert config_map["data"]["GOODPUT_MODEL"] == spec.model.source
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == str(tp)


def _shipped_operator_cpu_request() -> str:
    deployment = yaml.safe_load((REPO / "manifests" / "operator" / "deployment.yaml").read_text())
    return deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]


def test_cpu_worker_is_limited_to_one_core_and_packs_several_on_a_small_node(
    owner: Owner, example_spec: Any, make_plan: Any
) -> None:
    """A real CPU limit (the core the catalog's CPU capacity is fitted to) and a request small enough that a
    two-core node holds the tiny example's largest plan beside the operator; GPU workers keep their cores."""
    (cpu,) = _deployments(builders.build_children(owner, example_spec("tiny-cpu.yaml"), make_plan()))
    resources = _container(cpu)["resources"]
    assert resources["limits"]["cpu"] == "1"
    request = parse_quantity(resources["requests"]["cpu"])
    assert request < parse_quantity(resources["limits"]["cpu"])
    operator = parse_quantity(_shipped_operator_cpu_request())
    max_replicas = example_spec("tiny-cpu.yaml").scaling.max_replicas
    assert max_replicas * request + operator <= 2
    gpu_plan = make_plan(accelerator="L40S", tp=2)
    (gpu,) = _deployments(builders.build_children(owner, example_spec("chat-llama3-8b.yaml"), gpu_plan))
    gpu_resources = _container(gpu)["resources"]
    assert gpu_resources["requests"]["cpu"] == str(2 * builders.CPU_PER_GPU)
    assert "cpu" not in gpu_resources["limits"]


@pytest.mark.parametrize(
    ("tiers", "names"),
    [
        ((("interactive", 3, 32, 3.0),), ["tiny-interactive"]),
        ((("batch", 2, 128, 30.0),), ["tiny-batch"]),
        ((("interactive", 2, 32, 3.0), ("batch", 1, 128, 30.0)), ["tiny-interactive", "tiny-batch"]),
    ],
)
def test_one_deployment_and_service_per_tier(
    owner: Owner, example_spec: Any, make_plan: Any, tiers: Any, names: list[str]
) -> None:
    plan = make_plan(tiers=tiers)
    children = builders.build_children(owner, example_spec("tiny-cpu.yaml"), plan)
    kinds = [(c["kind"], c["metadata"]["name"]) for c in children]
    assert kinds[0] == ("ConfigMap", "tiny-engine")
    assert kinds[-1] == ("PodDisruptionBudget", "tiny-workers")
    assert [n for k, n in kinds if k == "Deployment"] == names
    assert [n for k, n in kinds if k == "Service"] == names
    for deployment, (tier, replicas, batch, window) in zip(_deployments(children), tiers, strict=True):
        args = _container(deployment)["args"]
        assert deployment["spec"]["replicas"] == replicas
        assert args[args.index("--max-num-seqs") + 1] == str(batch)
        assert float(args[args.index("--batch-window-ms") + 1]) == window
        assert args[args.index("--max-num-batched-tokens") + 1] == str(plan.chunk_tokens)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels[naming.LABEL_TIER] == tier
        assert deployment["spec"]["selector"]["matchLabels"] == {
            naming.LABEL_SERVICE: "tiny",
            naming.LABEL_TIER: tier,
        }


def test_worker_pod_contract(owner: Owner, example_spec: Any, make_plan: Any) -> None:
    """Command, probes, draining, labels, scrape annotations and the restricted security context."""
    (deployment,) = _deployments(builders.build_children(owner, example_spec("tiny-cpu.yaml"), make_plan()))
    template = deployment["spec"]["template"]
    container = _container(deployment)
    assert container["command"] == ["python", "-m", "goodput.worker_image"]
    assert container["args"][:4] == ["--host", "$(POD_IP)", "--port", "8000"]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["envFrom"] == [{"configMapRef": {"name": "tiny-engine"}}]
    drain = float(container["args"][container["args"].index("--drain-timeout-s") + 1])
    assert "preStop" in container["lifecycle"]
    assert template["spec"]["terminationGracePeriodSeconds"] > builders.PRESTOP_SECONDS + drain
    assert template["metadata"]["labels"] == {
        "app.kubernetes.io/name": "goodput-worker",
        "app.kubernetes.io/instance": "tiny",
        "app.kubernetes.io/managed-by": "goodput",
        "goodput.dev/inferenceservice": "tiny",
        "goodput.dev/tier": "interactive",
    }
    annotations = template["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "8000")
    assert annotations["prometheus.io/path"] == "/metrics"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    pod_security = template["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


@pytest.mark.parametrize("secret", [None, SecretKeyRef(name="tiny-key", key="token")])
def test_api_key_comes_from_the_secret_by_reference(
    owner: Owner, example_spec: Any, make_plan: Any, secret: SecretKeyRef | None
) -> None:
    spec = example_spec("tiny-cpu.yaml").model_copy(update={"worker": WorkerSpec(api_key_secret=secret)})
    (deployment,) = _deployments(builders.build_children(owner, spec, make_plan()))
    env = {e["name"]: e for e in _container(deployment)["env"]}
    if secret is None:
        assert "GOODPUT_API_KEY" not in env
    else:
        assert env["GOODPUT_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "tiny-key", "key": "token"}}


def test_every_child_is_owned_and_labelled(owner: Owner, example_spec: Any, make_plan: Any) -> None:
    plan = make_plan(tiers=(("interactive", 2, 32, 3.0), ("batch", 1, 128, 30.0)))
    for child in builders.build_children(owner, example_spec("tiny-cpu.yaml"), plan):
        meta = child["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "goodput.dev/v1alpha1",
                "kind": "InferenceService",
                "name": "tiny",
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"][naming.LABEL_MANAGED_BY] == "goodput"
        assert meta["labels"][naming.LABEL_SERVICE] == "tiny"


@pytest.mark.parametrize(
    ("change", "changed"),
    [
        ({}, set()),
        ({"tiers": (("interactive", 5, 32, 3.0),)}, {"Deployment/tiny-interactive"}),
        ({"tiers": (("interactive", 2, 64, 3.0),)}, {"Deployment/tiny-interactive"}),
        ({"chunk_tokens": 1024}, {"Deployment/tiny-interactive"}),
    ],
)
def test_building_is_deterministic_and_changes_only_what_the_plan_changes(
    owner: Owner, example_spec: Any, make_plan: Any, change: dict[str, Any], changed: set[str]
) -> None:
    spec = example_spec("tiny-cpu.yaml")
    before = {
        f"{c['kind']}/{c['metadata']['name']}": c for c in builders.build_children(owner, spec, make_plan())
    }
    after = {
        f"{c['kind']}/{c['metadata']['name']}": c
        for c in builders.build_children(owner, spec, make_plan(**change))
    }
    assert before.keys() == after.keys()
    assert {key for key in before if before[key] != after[key]} == changed


def test_a_changed_engine_config_rolls_the_pods(owner: Owner, example_spec: Any, make_plan: Any) -> None:
    plan = make_plan()
    spec = example_spec("tiny-cpu.yaml")
    other = spec.model_copy(update={"model": spec.model.model_copy(update={"source": "random:small"})})

    def config_hash(s: Any) -> str:
        (deployment,) = _deployments(builders.build_children(owner, s, plan))
        return deployment["spec"]["template"]["metadata"]["annotations"][naming.ANNOTATION_CONFIG_HASH]

    assert config_hash(spec) != config_hash(other)


def test_service_and_pdb(owner: Owner) -> None:
    service = builders.build_service(owner, "batch")
    assert service["spec"]["selector"] == {naming.LABEL_SERVICE: "tiny", naming.LABEL_TIER: "batch"}
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = builders.build_pdb(owner)
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {naming.LABEL_SERVICE: "tiny"}}}


@pytest.mark.parametrize(
    ("name", "expected_length"),
    [("tiny", len("tiny-interactive")), ("x" * 51, 63), ("x" * 60, 63), ("y" * 63, 63)],
)
def test_long_names_fit_a_dns_label(name: str, expected_length: int) -> None:
    fitted = naming.tier_name(name, "interactive")
    assert len(fitted) == expected_length
    assert fitted == naming.tier_name(name, "interactive")
    assert fitted != naming.tier_name(name, "batch")


def test_plan_naming_an_unlisted_accelerator_is_an_error(
    owner: Owner, example_spec: Any, make_plan: Any
) -> None:
    with pytest.raises(ValueError, match="A100"):
        builders.build_children(owner, example_spec("tiny-cpu.yaml"), make_plan(accelerator="A100-80GB"))


def test_event_is_one_line_on_the_service(owner: Owner) -> None:
    event = builders.build_event(owner, "Scaled", "scaled interactive 2→4: TTFT p95 820 ms > 500 ms", 1.7e9)
    assert event["involvedObject"]["uid"] == owner.uid
    assert event["reason"] == "Scaled"
    assert "\n" not in event["message"]
    assert event["metadata"]["name"].startswith("tiny.")
