"""`goodput plan`: JSON contract, table, plot, invalid manifests and infeasible plans."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from goodput.controllers.cli import EXIT_INFEASIBLE, EXIT_INVALID, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "manifests" / "examples"
CHAT = EXAMPLES / "chat-llama3-8b.yaml"


def edited(tmp_path: Path, source: Path, **spec_changes: object) -> Path:
    obj = yaml.safe_load(source.read_text())
    for path, value in spec_changes.items():
        *parents, leaf = path.split("__")
        node = obj["spec"]
        for key in parents:
            node = node[key]
        node[leaf] = value
    out = tmp_path / source.name
    out.write_text(yaml.safe_dump(obj))
    return out


def test_plan_chat_json_at_20_rps(capsys):
    assert main(["plan", "-f", str(CHAT), "--rps", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    plan = report["plan"]
    for key in (
        "accelerator",
        "tensorParallel",
        "replicas",
        "maxBatch",
        "batchWindowMs",
        "tier",
        "costPerHour",
    ):
        assert key in plan
    assert plan["accelerator"] in ("H100-SXM", "L40S") and plan["tier"] == "interactive"
    assert plan["predictedTtftP95Ms"] <= 500 and plan["predictedTpotP95Ms"] <= 50
    assert report["model"]["kvBytesPerToken"] == 131_072
    assert report["load"]["rps"] == 20
    assert report["alternatives"] and all("rejected" in a for a in report["alternatives"])
    assert all(
        a["costPerHour"] is None or a["costPerHour"] >= plan["costPerHour"] for a in report["alternatives"]
    )


def test_tiny_cpu_plans_to_cpu(capsys):
    assert main(["plan", "-f", str(EXAMPLES / "tiny-cpu.yaml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plan"]["accelerator"] == "CPU"


def test_table_and_plot(capsys, tmp_path):
    png = tmp_path / "frontier.png"
    assert main(["plan", "-f", str(CHAT), "--rps", "8", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "plan" in out and "H100-SXM" in out and "131,072" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_invalid_manifest_names_the_field(capsys, tmp_path):
    bad = edited(tmp_path, CHAT, scaling__minReplicas=20, scaling__maxReplicas=2)
    assert main(["plan", "-f", str(bad), "--json"]) == EXIT_INVALID
    assert "spec.scaling.minReplicas" in capsys.readouterr().err


def test_infeasible_plan_exits_non_zero_and_names_the_constraint(capsys, tmp_path):
    impossible = edited(tmp_path, CHAT, slo__tpotP95Ms=1.5)
    assert main(["plan", "-f", str(impossible), "--json"]) == EXIT_INFEASIBLE
    captured = capsys.readouterr()
    assert json.loads(captured.out)["plan"] is None
    assert "no feasible plan: tpot" in captured.err


def test_rps_and_trace_are_exclusive():
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["plan", "-f", str(CHAT), "--rps", "1", "--trace", "x.csv"])
    assert exit_.value.code == 2


def test_console_entry_point_runs_as_a_process():
    done = subprocess.run(
        [sys.executable, "-m", "goodput.controllers.cli", "plan", "-f", str(CHAT), "--rps", "20", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["plan"]["replicas"] >= 1


def test_policy_headroom_and_calibration_flags_add_replicas(capsys, tmp_path):
    policy = yaml.safe_load((ROOT / "manifests" / "default-slopolicy.yaml").read_text())
    policy["spec"]["headroom"] = 0.6
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    args = ["plan", "-f", str(CHAT), "--rps", "40", "--json"]
    assert main(args) == 0
    base = json.loads(capsys.readouterr().out)["plan"]
    assert main([*args, "--policy", str(path)]) == 0
    roomy = json.loads(capsys.readouterr().out)["plan"]
    assert main([*args, "--ttft-factor", "2", "--tpot-factor", "2"]) == 0
    slow = json.loads(capsys.readouterr().out)["plan"]
    assert (
        roomy["costPerHour"] >= base["costPerHour"]
        and roomy["replicas"] * roomy["tensorParallel"] > base["replicas"] * base["tensorParallel"]
    )
    assert slow["predictedTpotP95Ms"] > base["predictedTpotP95Ms"]
