"""`goodput status` and `goodput explain` against the emulated API server (kmock) and a fake Prometheus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import kopf
import pytest
import pytest_asyncio
import yaml

from goodput.controllers import builders, oncall
from goodput.controllers.cli import explain, main
from goodput.controllers.kube import KubeClient
from goodput.controllers.prometheus import queries
from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.types import Load
from testkit.apiserver import ApiServer
from testkit.kubeconfig import write_kubeconfig
from testkit.prometheus import free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "manifests" / "examples"
NOW = "2026-11-22T11:00:00Z"


def kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig whose context namespace is team-a, where most tests create their services."""
    return write_kubeconfig(path, server, "team-a")


def service(example: str, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    obj = yaml.safe_load((EXAMPLES / example).read_text())
    obj["metadata"] = {"name": name, "namespace": namespace}
    obj["spec"].update(spec)
    return obj


def deployment(namespace: str, name: str, tier: str, replicas: int) -> dict[str, Any]:
    labels = {"goodput.dev/inferenceservice": name, "goodput.dev/tier": tier}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{name}-{tier}", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "w", "image": "x"}]},
            },
        },
    }


CHAT_STATUS = {
    "observedGeneration": 1,
    "observed": {
        "time": NOW,
        "windowSeconds": 60.0,
        "rps": 12.5,
        "promptTokensP50": 700.0,
        "promptTokensP95": 1800.0,
        "outputTokensP50": 150.0,
        "outputTokensP95": 400.0,
        "ttftP95Ms": 640.0,
        "tpotP95Ms": 31.0,
        "queueDepth": 3.0,
    },
    "plan": {
        "accelerator": "H100-SXM",
        "tensorParallel": 1,
        "replicas": 2,
        "maxBatch": 64,
        "batchWindowMs": 5.0,
        "chunkTokens": 512,
        "tier": "interactive",
        "tiers": [{"tier": "interactive", "replicas": 2, "maxBatch": 64, "batchWindowMs": 5.0}],
        "predictedTtftP95Ms": 310.0,
        "predictedTpotP95Ms": 22.0,
        "costPerHour": 7.9,
    },
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "ReplicasReady", "lastTransitionTime": NOW},
        {
            "type": "SLOMet",
            "status": "False",
            "reason": "Violated",
            "message": "TTFT p95 640 ms > 500 ms",
            "lastTransitionTime": NOW,
        },
        {"type": "MetricsAvailable", "status": "True", "reason": "Fresh", "lastTransitionTime": NOW},
        {"type": "CapacityLimited", "status": "False", "reason": "WithinLimits", "lastTransitionTime": NOW},
        {"type": "InvalidSpec", "status": "False", "reason": "Valid", "lastTransitionTime": NOW},
    ],
    "lastDecision": {"time": NOW, "from": 1, "to": 2, "reason": "scaled interactive 1→2: TTFT p95 breach"},
    "calibration": {"ttftFactor": 1.4, "tpotFactor": 0.8, "samples": 6},
}


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[KubeClient, Path]]:
    """The emulated API server with `team-a/chat` (status written as the operator would) and `team-b/tiny`."""
    async with ApiServer(deployment_controller=False) as server, kmock.Server(server) as http:
        client = KubeClient.connect(kopf.ConnectionInfo(server=str(http.url)), timeout_s=5, max_in_flight=4)
        try:
            await client.create(service("chat-llama3-8b.yaml", "team-a", "chat"))
            await client.patch_status("InferenceService", "team-a", "chat", CHAT_STATUS)
            chat = deployment("team-a", "chat", "interactive", 2)
            chat["status"] = {"replicas": 2, "readyReplicas": 1}
            await client.create(chat)
            await client.create(service("tiny-cpu.yaml", "team-b", "tiny", mode="recommend"))
            owner = await client.get("InferenceService", "team-a", "chat")
            ref = builders.Owner(owner["metadata"]["name"], "team-a", owner["metadata"]["uid"])
            await client.create(
                builders.build_event(ref, "Scaled", "scaled interactive 1→2: TTFT p95 breach", 1e9)
            )
            yield client, kubeconfig(tmp_path / "kubeconfig", str(http.url))
        finally:
            await client.close()


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.asyncio
async def test_status_json_matches_the_api_objects(api, capsys) -> None:
    client, config = api
    code, out, _ = await cli(capsys, "status", "-A", "--json", "--kubeconfig", str(config))
    assert code == 0
    rows = {(r["namespace"], r["name"]): r for r in json.loads(out)}
    assert set(rows) == {("team-a", "chat"), ("team-b", "tiny")}
    chat_obj = await client.get("InferenceService", "team-a", "chat")
    chat = rows["team-a", "chat"]
    assert chat["slo"] == chat_obj["spec"]["slo"]
    assert chat["plan"] == chat_obj["status"]["plan"]
    assert chat["lastDecision"] == chat_obj["status"]["lastDecision"]
    assert chat["observed"] == {"source": "status", **chat_obj["status"]["observed"]}
    assert chat["tiers"] == [
        {"tier": "interactive", "deployment": "chat-interactive", "desired": 2, "ready": 1}
    ]
    assert chat["conditions"]["SLOMet"] == {
        "status": "False",
        "reason": "Violated",
        "message": "TTFT p95 640 ms > 500 ms",
    }
    assert chat["healthy"] is False
    tiny = rows["team-b", "tiny"]
    assert (tiny["mode"], tiny["plan"], tiny["observed"], tiny["tiers"]) == ("recommend", None, None, [])


@pytest.mark.asyncio
async def test_status_defaults_to_the_context_namespace_and_renders_a_table(api, capsys, monkeypatch) -> None:
    _, config = api
    monkeypatch.setenv("COLUMNS", "300")  # wide enough that no cell wraps
    code, out, _ = await cli(capsys, "status", "--kubeconfig", str(config))
    assert code == 0
    assert "chat" in out and "tiny" not in out  # the context's namespace is team-a
    assert "1×H100-SXM [interactive×2 B64 W5ms], predicted TTFT/TPOT p95 310/22 ms, $7.90/h" in out
    assert "SLOMet=False Violated" in out
    assert "interactive 1/2" in out
    assert "scaled interactive 1→2" in out
    code, out, err = await cli(capsys, "status", "-n", "nobody", "--kubeconfig", str(config))
    assert code == 0 and "No InferenceServices in namespace nobody" in err


def _answers(window_s: int) -> dict[str, list[dict[str, Any]]]:
    """Prometheus rows for team-a/chat: 300 requests in the window, TTFT p95 in the (0.25, 0.5] bucket."""

    def row(series: str | None, value: float, **labels: str) -> dict[str, Any]:
        metric = {"namespace": "team-a", "inferenceservice": "chat", "tier": "interactive", **labels}
        if series:
            metric["series"] = series
        return {"metric": metric, "value": [0, repr(value)]}

    ttft = [("0.1", 150.0), ("0.25", 270.0), ("0.5", 300.0), ("+Inf", 300.0)]
    itl = [("0.01", 5000.0), ("0.025", 9000.0), ("0.05", 10000.0), ("+Inf", 10000.0)]
    return {
        "latency": [row("ttft", c, le=le) for le, c in ttft] + [row("itl", c, le=le) for le, c in itl],
        "tokens": [],
        "requests": [row(None, 300.0)],
        "gauges": [row("waiting", 0.0), row("pods", 1.0), row("newest", 2e9)],
    }


@pytest_asyncio.fixture
async def prometheus() -> AsyncIterator[str]:
    """Answers the operator's four queries (and nothing else) with `_answers`."""
    by_query = {text: name for name, text in queries(60).items()}
    answers = _answers(60)

    async def query(request: aiohttp.web.Request) -> aiohttp.web.Response:
        name = by_query.get((await request.post()).get("query", ""))
        if name is None:
            return aiohttp.web.json_response({"status": "error", "error": "unexpected query"}, status=400)
        return aiohttp.web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": answers[name]}}
        )

    app = aiohttp.web.Application()
    app.router.add_post("/api/v1/query", query)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_status_refreshes_p95s_from_prometheus(api, prometheus, capsys, monkeypatch) -> None:
    _, config = api
    monkeypatch.setenv(oncall.PROMETHEUS_ENV, prometheus)
    code, out, _ = await cli(capsys, "status", "--json", "--kubeconfig", str(config))
    assert code == 0
    (chat,) = json.loads(out)
    observed = chat["observed"]
    assert observed["source"] == "prometheus"
    assert observed["rps"] == pytest.approx(300 / 60)
    assert observed["ttftP95Ms"] == pytest.approx(250 + 250 * (285 - 270) / 30)
    assert observed["tpotP95Ms"] == pytest.approx(25 + 25 * (9500 - 9000) / 1000)


@pytest.mark.asyncio
async def test_unreachable_prometheus_falls_back_to_status(api, capsys) -> None:
    _, config = api
    closed = f"http://127.0.0.1:{free_port()}"
    code, out, err = await cli(
        capsys, "status", "--json", "--prometheus", closed, "--kubeconfig", str(config)
    )
    assert code == 0
    assert f"warning: Prometheus at {closed} did not answer" in err and "Traceback" not in err
    (chat,) = json.loads(out)
    assert chat["observed"]["source"] == "status" and chat["observed"]["rps"] == 12.5


@pytest.mark.asyncio
async def test_unreachable_cluster_is_one_line(tmp_path, capsys) -> None:
    config = kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{free_port()}")
    for verb in (["status"], ["explain", "chat"]):
        code, _, err = await cli(capsys, *verb, "--kubeconfig", str(config))
        assert code == oncall.EXIT_UNREACHABLE
        assert (
            err.startswith("error: cannot reach the API server at http://127.0.0.1:") and err.count("\n") == 1
        )
    code, _, err = await cli(capsys, "status", "--kubeconfig", str(tmp_path / "missing"))
    assert code == oncall.EXIT_UNREACHABLE and err.startswith("error: no usable cluster configuration")


def _expected_load(spec: InferenceServiceSpec, rps: float, cached_prompt_fraction: float = 0.0) -> Load:
    observed = CHAT_STATUS["observed"]
    load, _ = oncall.observed_load(spec, {**observed, "rps": rps}, None, cached_prompt_fraction)
    return load


@pytest.mark.asyncio
async def test_explain_replans_with_the_observed_load_and_calibration(api, capsys) -> None:
    client, config = api
    code, out, _ = await cli(capsys, "explain", "chat", "--json", "--kubeconfig", str(config))
    assert code == 0
    report = json.loads(out)
    assert report["calibration"] == {"ttftFactor": 1.4, "tpotFactor": 0.8, "samples": 6}
    assert report["load"]["rps"] == 12.5 and report["loadSource"] == "rate: observed; token mix: observed"
    assert report["load"]["promptTokensP50"] == pytest.approx(700, rel=0.02)
    assert report["running"] == CHAT_STATUS["plan"]
    assert report["policy"]["source"].startswith("built-in defaults")
    (event,) = report["events"]
    assert (event["reason"], event["message"]) == ("Scaled", "scaled interactive 1→2: TTFT p95 breach")

    spec = InferenceServiceSpec.model_validate(
        (await client.get("InferenceService", "team-a", "chat"))["spec"]
    )
    expected = planner.plan(spec, _expected_load(spec, 12.5), SLOPolicySpec(), 1.4, 0.8).chosen
    assert expected is not None
    chosen = report["plan"]
    assert (chosen["accelerator"], chosen["tensorParallel"], chosen["replicas"], chosen["maxBatch"]) == (
        expected.accelerator,
        expected.tensor_parallel,
        expected.replicas,
        expected.max_batch,
    )
    assert report["alternatives"] and all(  # each alternative is ruled out by name, or costs as much or more
        a["rejected"] or a["costPerHour"] >= chosen["costPerHour"] for a in report["alternatives"]
    )
    assert [w["change"].split(" (")[0] for w in report["whatIf"]] == [
        "load ×0.5",
        "load ×2",
        "load ×4",
        "TTFT targets ×0.5",
        "TPOT targets ×0.5",
        "both targets ×2",
    ]
    ranges = report["replicaRange"]
    assert ranges["basis"] == "the running plan (status.plan)"
    assert ranges["upAboveRps"] > 12.5
    assert any(row["planned"] for row in report["frontier"]["rows"])


@pytest.mark.asyncio
async def test_explain_plans_with_the_headroom_the_error_budget_leaves(api, capsys) -> None:
    client, config = api
    code, out, _ = await cli(capsys, "explain", "chat", "--json", "--kubeconfig", str(config))
    assert json.loads(out)["errorBudget"] == {"spent": 0.5, "headroom": 0.2}  # no evidence: full headroom
    # a million first tokens in the hour, none late: the operator plans with a quarter of the headroom
    scaler = {"sloSeen": 1e6, "sloMissed": 0.0}
    await client.patch_status("InferenceService", "team-a", "chat", {**CHAT_STATUS, "scaler": scaler})
    args = ("explain", "chat", "--rps", "40", "--kubeconfig", str(config))
    code, out, _ = await cli(capsys, *args, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["errorBudget"]["headroom"] == pytest.approx(0.05)
    assert report["policy"]["headroom"] == 0.2  # the policy as configured
    spec = InferenceServiceSpec.model_validate(
        (await client.get("InferenceService", "team-a", "chat"))["spec"]
    )
    load = _expected_load(spec, 40.0)
    lean, full = (planner.plan(spec, load, SLOPolicySpec(headroom=h), 1.4, 0.8).chosen for h in (0.05, 0.2))
    assert lean is not None and full is not None and lean.replicas < full.replicas
    assert report["plan"]["replicas"] == lean.replicas
    code, out, _ = await cli(capsys, *args)
    assert "planning with headroom 0.05 (policy 0.2)" in out


@pytest.mark.asyncio
async def test_explain_plans_with_the_prefix_caches_share_as_the_autoscaler_does(api, capsys) -> None:
    client, config = api
    scaler = {"cachedPromptFraction": 0.9}  # most prompt tokens come from the workers' prefix caches
    await client.patch_status("InferenceService", "team-a", "chat", {**CHAT_STATUS, "scaler": scaler})
    code, out, _ = await cli(capsys, "explain", "chat", "--rps", "40", "--json", "--kubeconfig", str(config))
    assert code == 0
    spec = InferenceServiceSpec.model_validate(
        (await client.get("InferenceService", "team-a", "chat"))["spec"]
    )
    cached, uncached = (
        planner.plan(spec, _expected_load(spec, 40.0, share), SLOPolicySpec(), 1.4, 0.8).chosen
        for share in (0.9, 0)
    )
    assert cached is not None and uncached is not None and cached.replicas < uncached.replicas
    assert json.loads(out)["plan"]["replicas"] == cached.replicas


@pytest.mark.asyncio
async def test_explain_uses_the_cluster_policy_and_names_a_missing_one(api, capsys) -> None:
    client, config = api
    await client.create(
        {
            "apiVersion": "goodput.dev/v1alpha1",
            "kind": "SLOPolicy",
            "metadata": {"name": "default"},
            "spec": {"headroom": 0.5},
        }
    )
    code, out, _ = await cli(capsys, "explain", "chat", "--json", "--rps", "40", "--kubeconfig", str(config))
    report = json.loads(out)
    assert (
        code == 0
        and report["policy"]["source"] == "SLOPolicy default"
        and report["policy"]["headroom"] == 0.5
    )
    assert report["load"]["rps"] == 40 and report["loadSource"].startswith("rate: --rps")
    await client.create(service("tiny-cpu.yaml", "team-a", "tiny", policyRef="careful"))
    code, out, _ = await cli(capsys, "explain", "tiny", "--json", "--kubeconfig", str(config))
    report = json.loads(out)
    assert code == 0 and "careful NOT FOUND" in report["policy"]["source"]
    assert report["loadSource"] == "rate: spec hint (expectedRps); token mix: spec hints"
    code, _, err = await cli(capsys, "explain", "nope", "--kubeconfig", str(config))
    assert code == oncall.EXIT_NOT_FOUND and "InferenceService nope not found in namespace team-a" in err


@pytest.mark.asyncio
async def test_explain_table_and_plot(api, capsys, tmp_path, monkeypatch) -> None:
    _, config = api
    monkeypatch.setenv("COLUMNS", "300")
    plot = tmp_path / "frontier.png"
    code, out, err = await cli(capsys, "explain", "chat", "--plot", str(plot), "--kubeconfig", str(config))
    assert code == 0 and plot.stat().st_size > 10_000 and f"wrote {plot}" in err
    for text in ("Calibration: TTFT ×1.4, TPOT ×0.8", "SLOMet=False Violated", "what-if", "← planned"):
        assert text in out, text


def test_replica_range_brackets_the_replica_count() -> None:
    """Just below the down edge fewer replicas suffice; just above the up edge more are needed."""
    obj = yaml.safe_load((EXAMPLES / "chat-llama3-8b.yaml").read_text())
    spec = InferenceServiceSpec.model_validate(obj["spec"])
    policy = SLOPolicySpec()
    load = replace(planner.load_from_spec(spec), rps=30.0)
    chosen = planner.plan(spec, load, policy).chosen
    assert chosen is not None
    ranges = explain.replica_range(spec, chosen, load, policy, 1.0, 1.0)
    assert ranges is not None and ranges.replicas == chosen.replicas

    def need(rps: float) -> int:
        return planner.replicas_for(spec, chosen, replace(load, rps=rps), policy).replicas

    assert ranges.up_above_rps is not None and need(ranges.up_above_rps * 1.01) > ranges.replicas
    assert need(ranges.up_above_rps * 0.99) == ranges.replicas
    if ranges.down_below_rps is not None:
        assert need(ranges.down_below_rps * 0.99) < ranges.replicas <= need(ranges.down_below_rps * 1.01)


def test_every_goodput_command_in_the_docs_exists() -> None:
    """docs/oncall.md and the README tell on-call to run these; each must parse."""
    import re
    import shlex

    from goodput.controllers.cli import build_parser

    parser = build_parser()
    for doc in (ROOT / "docs" / "oncall.md", ROOT / "README.md"):
        blocks = "".join(re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.DOTALL))
        lines = re.findall(r"^(goodput [^#\n]*)", blocks, flags=re.MULTILINE)
        assert lines, doc
        for line in lines:
            argv = shlex.split(line.strip())[1:]
            if argv[0] == "plan":
                continue  # needs a manifest file; tests/test_cli_plan.py covers it
            parser.parse_args(argv)


def test_status_prints_operator_text_verbatim_even_with_brackets(capsys) -> None:
    from goodput.controllers.cli.status import print_status

    reason = "planned CPU TP1 [interactive×1], predicted TTFT p95 4 ms"
    row = {
        "namespace": "default",
        "name": "tiny",
        "mode": "auto",
        "slo": {"ttftP95Ms": 500, "tpotP95Ms": 100},
        "observed": None,
        "tiers": [],
        "plan": None,
        "conditions": {"Ready": {"status": "False", "reason": "Waiting[1]"}},
        "lastDecision": {"time": NOW, "from": 0, "to": 1, "reason": reason},
    }
    print_status([row], show_namespace=False)
    out = "".join(capsys.readouterr().out.split())
    assert "[interactive×1]" in out
    assert "Waiting[1]" in out


def test_status_says_scaled_to_zero(capsys) -> None:
    from goodput.controllers.cli.status import print_status, status_row

    plan = {"replicas": 0, "tier": "batch", "tiers": [{"tier": "batch", "replicas": 0}]}
    ready = {"type": "Ready", "status": "True", "reason": "ScaledToZero", "message": "scaled to zero"}
    obj = {
        "metadata": {"namespace": "default", "name": "summarize"},
        "spec": {"mode": "auto", "slo": {"ttftP95Ms": 10000, "tpotP95Ms": 150}},
        "status": {"plan": plan, "conditions": [ready]},
    }
    row = status_row(obj, [{"tier": "batch", "ready": 0, "desired": 0}], None, "")
    assert row["scaledToZero"] is True
    row["plan"] = None  # the summary of a partial plan is not what this test reads
    print_status([row], show_namespace=False)
    assert "scaled to zero" in capsys.readouterr().out
    obj["status"]["plan"] = {**plan, "replicas": 1}
    assert status_row(obj, [], None, "")["scaledToZero"] is False


def test_status_without_rights_on_slopolicies_warns_and_judges_staleness_by_the_defaults(capsys) -> None:
    """Listing services in a namespace takes less RBAC than reading the cluster-scoped SLOPolicies."""
    from kubernetes.client import ApiClient

    from goodput.controllers.cli import status
    from goodput.controllers.oncall import Cluster, OncallError

    class Refusing(Cluster):
        def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
            raise OncallError(f"{what}: 403 Forbidden from {self.server}")

    policy = status._policy(Refusing(ApiClient(), "https://api", "team-a"), "careful")
    assert policy == SLOPolicySpec()
    err = capsys.readouterr().err
    assert err.startswith("warning: SLOPolicy careful: 403 Forbidden from https://api; judging staleness")


@pytest.mark.parametrize(
    ("observed", "judged"),
    [
        ({"ttftP95Ms": 400.0, "routerTtftP95Ms": 1200.0}, 1200.0),  # the router's queue included
        ({"ttftP95Ms": 400.0, "routerTtftP95Ms": None}, 400.0),
        ({"ttftP95Ms": 400.0}, 400.0),
        ({}, None),
    ],
)
def test_status_judges_the_ttft_clients_see_as_the_autoscaler_does(observed, judged) -> None:
    from goodput.controllers.cli.status import client_ttft

    assert client_ttft(observed) == judged
