"""How the operator scales with the number of InferenceServices: queries, interval wall time, memory.

    python -m bench.operator_scale --services 1000 --json out/operator_scale.json

Three processes besides this one: the emulated API server (testkit.apiserver), a real Prometheus
(Debian's binary) scraping synthetic vLLM-named workers served from here, and the operator itself
(`kopf run --standalone -A operator/main.py`). Once every service has a plan, the script reads the operator's
own /metrics for a number of control intervals, changes the load of a tenth of the services half-way so
decisions and writes happen, and reports:

- queries_per_interval: PromQL queries per control interval (goal: at most 5, whatever the service count);
- interval_seconds: the longest wall time of one control interval for all services (goal: under 5 s);
- rss_mb: the operator's peak resident memory (VmHWM; goal: under 300 MB).

Wall time depends on what else the machine runs, so the result also gives the operator's own CPU seconds per
interval (user + system, from /proc), the part of it spent inside the policies, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from testkit.kubeconfig import write_kubeconfig
from testkit.prometheus import PrometheusProcess, free_port
from testkit.workers import SyntheticWorkers, Traffic

ROOT = Path(__file__).resolve().parents[1]
GROUP_PATH = "/apis/goodput.dev/v1alpha1"


# How often the script reads the operator's /metrics, per control interval. Each read renders every service's
# series in the operator's process (a tenth of its CPU at 20 reads an interval); a real Prometheus scrapes it
# every 15-30 s, so the script reads just often enough to see each interval end.
READS_PER_INTERVAL = 5


def _metrics(port: int) -> dict[str, float]:
    """The operator's own metrics, unlabelled samples summed by name."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        name = name.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(value)
    return out


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (contention-free work, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


async def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(url)


def hinted_rps(index: int) -> float:
    """Services differ in load, as a real fleet's do: 40 levels from 0.5 to 10.25 rps."""
    return 0.5 + (index % 40) * 0.25


async def _create_services(api: str, count: int, interval_s: float) -> list[str]:
    template = yaml.safe_load((ROOT / "manifests/examples/tiny-cpu.yaml").read_text())
    policy = {
        "apiVersion": "goodput.dev/v1alpha1",
        "kind": "SLOPolicy",
        "metadata": {"name": "bench"},
        "spec": {"evaluationIntervalSeconds": interval_s, "staleAfterSeconds": 6 * interval_s},
    }
    names = [f"svc-{i:04d}" for i in range(count)]
    async with aiohttp.ClientSession(base_url=api) as session:
        async with session.post(f"{GROUP_PATH}/slopolicies", json=policy) as response:
            response.raise_for_status()
        limit = asyncio.Semaphore(32)

        async def create(index: int, name: str) -> None:
            body = {**template, "metadata": {"name": name, "namespace": "bench"}}
            traffic = {**template["spec"]["traffic"], "expectedRps": hinted_rps(index)}
            body["spec"] = {**template["spec"], "policyRef": "bench", "traffic": traffic}
            async with (
                limit,
                session.post(f"{GROUP_PATH}/namespaces/bench/inferenceservices", json=body) as r,
            ):
                r.raise_for_status()

        await asyncio.gather(*(create(index, name) for index, name in enumerate(names)))
    return names


async def _planned(api: str) -> int:
    async with (
        aiohttp.ClientSession(base_url=api) as session,
        session.get(f"{GROUP_PATH}/namespaces/bench/inferenceservices") as response,
    ):
        items = (await response.json())["items"]
    return sum(1 for item in items if item.get("status", {}).get("plan"))


async def _after_next_interval(port: int, interval_s: float) -> dict[str, float]:
    """Metrics read just after an interval ends, so each later sample covers whole intervals only."""
    first = _metrics(port).get("goodput_operator_intervals_total", 0.0)
    while True:
        await asyncio.sleep(interval_s / READS_PER_INTERVAL)
        now = _metrics(port)
        if now.get("goodput_operator_intervals_total", 0.0) > first:
            return now


def _sample_interval(port: int, last: dict[str, float]) -> tuple[dict[str, float], dict[str, float] | None]:
    now = _metrics(port)
    intervals = now.get("goodput_operator_intervals_total", 0.0) - last.get(
        "goodput_operator_intervals_total", 0.0
    )
    if intervals < 1:
        return last, None
    sample = {
        "intervals": intervals,
        "queries": now["goodput_operator_prometheus_queries_total"]
        - last.get("goodput_operator_prometheus_queries_total", 0.0),
        "last_seconds": now["goodput_operator_last_poll_duration_seconds"],
        "prometheus_read_seconds": now["goodput_operator_last_prometheus_read_seconds"],
        "decisions": now.get("goodput_operator_decisions_total", 0.0)
        - last.get("goodput_operator_decisions_total", 0.0),
        "services": now.get("goodput_operator_services", 0.0),
        "policy_cpu_seconds": now["goodput_operator_policy_cpu_seconds_total"]
        - last.get("goodput_operator_policy_cpu_seconds_total", 0.0),
    }
    return now, sample


async def run(services: int, intervals: int, interval_s: float, scrape_s: float) -> dict[str, Any]:
    workers = SyntheticWorkers()
    workers_port = workers.serve()
    api_port, metrics_port, probe_port = free_port(), free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    prom = PrometheusProcess([f"127.0.0.1:{workers_port}"], scrape_interval_s=scrape_s)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            subprocess.Popen([sys.executable, "-m", "testkit.apiserver", "--port", str(api_port)], cwd=ROOT)
        )
        await _wait_http(f"{api_url}/version", 30)
        names = await _create_services(api_url, services, interval_s)
        for name in names:
            workers.set(
                ("bench", name, "interactive"), Traffic(rps=2.0, ttft_s=0.08, itl_s=0.004, running=1.0)
            )
        prom.start()
        kubeconfig = Path(tempfile.mkdtemp(prefix="goodput-bench-")) / "kubeconfig"
        write_kubeconfig(kubeconfig, api_url)
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "GOODPUT_OPERATOR_PROMETHEUS_URL": prom.url,
            "GOODPUT_OPERATOR_POLL_INTERVAL_S": f"{interval_s:g}",
            "GOODPUT_OPERATOR_WINDOW_S": str(int(max(4 * scrape_s, 2 * interval_s))),
            "GOODPUT_OPERATOR_METRICS_PORT": str(metrics_port),
            "MALLOC_ARENA_MAX": "2",  # as in manifests/operator/deployment.yaml
        }
        operator = subprocess.Popen(
            [
                sys.executable, "-m", "kopf", "run", "--standalone", "-A", "--quiet",
                f"--liveness=http://127.0.0.1:{probe_port}/healthz", str(ROOT / "operator/main.py"),
            ],
            cwd=ROOT,
            env=env,
        )  # fmt: skip
        processes.append(operator)
        started = time.monotonic()
        while await _planned(api_url) < services:
            if operator.poll() is not None:
                raise RuntimeError("the operator exited")
            await asyncio.sleep(2)
        startup_s = time.monotonic() - started
        print(f"all {services} services planned and applied in {startup_s:.1f} s", flush=True)

        samples: list[dict[str, float]] = []
        last = await _after_next_interval(metrics_port, interval_s)  # the startup interval is not measured
        cpu = _cpu_seconds(operator.pid)
        changed = False
        while len(samples) < intervals:
            await asyncio.sleep(interval_s / READS_PER_INTERVAL)
            last, sample = _sample_interval(metrics_port, last)
            if sample is None:
                continue
            sample["operator_cpu_seconds"], cpu = _cpu_seconds(operator.pid) - cpu, _cpu_seconds(operator.pid)
            samples.append(sample)
            print(json.dumps(sample), flush=True)
            if not changed and len(samples) >= intervals // 2:  # a tenth of the services get busy
                for name in names[: max(1, services // 10)]:
                    workers.update(
                        ("bench", name, "interactive"), rps=30.0, ttft_s=1.5, waiting=10.0, running=20.0
                    )
                changed = True
        total_intervals = sum(s["intervals"] for s in samples)
        return {
            "services": services,
            "queries_per_interval": sum(s["queries"] for s in samples) / total_intervals,
            "interval_seconds": max(s["last_seconds"] for s in samples),
            "interval_seconds_median": sorted(s["last_seconds"] for s in samples)[len(samples) // 2],
            "rss_mb": round(_peak_rss_mb(operator.pid), 1),
            "intervals_measured": int(total_intervals),
            "decisions": sum(s["decisions"] for s in samples),
            "prometheus_read_seconds_median": sorted(s["prometheus_read_seconds"] for s in samples)[
                len(samples) // 2
            ],
            "operator_cpu_seconds_per_interval": round(
                sum(s["operator_cpu_seconds"] for s in samples) / total_intervals, 2
            ),
            "policy_cpu_seconds_per_interval": round(
                sum(s["policy_cpu_seconds"] for s in samples) / total_intervals, 2
            ),
            "startup_seconds": round(startup_s, 1),
            "load_average_1m": os.getloadavg()[0],
            "cpus": os.cpu_count(),
            "poll_interval_seconds": interval_s,
            "scrape_interval_seconds": scrape_s,
        }
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        prom.close()
        workers.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--intervals", type=int, default=8, help="control intervals to measure")
    parser.add_argument("--interval", type=float, default=5.0, help="the operator's poll interval, seconds")
    parser.add_argument("--scrape", type=float, default=5.0, help="Prometheus scrape interval, seconds")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the child processes
    result = asyncio.run(run(args.services, args.intervals, args.interval, args.scrape))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
