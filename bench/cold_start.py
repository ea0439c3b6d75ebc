"""The worker's cold start: seconds from launching `python -m goodput.worker_image` to its /health answering and
to /ready (model loaded, KV pool sized, decode graphs captured, one warm-up generation), with the phases
in between, for the simulator's start-delay model.

The worker runs as a child process, exactly as in a pod, with an empty Triton cache (a fresh pod has none)
and a few timing hooks around the model runner's load steps (they only record clock readings). The parent
polls the two endpoints. Weights are the preset's random ones, generated on the host's CPU: a real model
reads safetensors instead, so `load_weights` is the phase a real model changes.

    python bench/cold_start.py --preset qwen2.5-0.5b --device cuda --dtype bfloat16 --json $OUT/cold_start.json
    python bench/cold_start.py --preset tiny --preset qwen2.5-0.5b --json bench/results/cold_start_cpu.json

Output schema ("goodput.cold_start/1"): {schema, device, machine, measured_at, versions, runs: [{model,
device, dtype, weight_bytes, health_s, ready_s, phases_s: {imports, load_weights, kv_sizing,
graph_capture, engine, warm_up}, num_kv_blocks, cuda_graph_sizes, host_load_1m_before}]}. `ready_s` is
the start delay.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA = "goodput.cold_start/1"
PHASES_ENV = "GOODPUT_COLD_START_PHASES"  # file the child appends its phase records to


def record(**fields: Any) -> None:
    """Append one JSON line to the phases file (the child's only output channel besides its logs)."""
    with open(os.environ[PHASES_ENV], "a") as f:
        f.write(json.dumps(fields) + "\n")


def timed(phase: str, fn: Callable[..., Any], extra: Callable[[Any, tuple], dict] | None = None) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        result = fn(*args, **kwargs)
        record(phase=phase, start=start, end=time.time(), **(extra(result, args) if extra else {}))
        return result

    return wrapper


def child(argv: list[str]) -> int:
    """The worker's own entry point, with the load steps timed. A renamed step fails here, loudly, in
    the CPU rehearsal rather than on a GPU."""
    record(phase="interpreter", start=float(os.environ["GOODPUT_COLD_START_T0"]), end=time.time())
    start = time.time()
    from goodput.worker_image import __main__ as worker_main
    from goodput.worker_image import engine, model_runner

    record(phase="imports", start=start, end=time.time())

    def weight_bytes(result: tuple, _: tuple) -> dict:
        return {"weight_bytes": sum(p.numel() * p.element_size() for p in result[0].parameters())}

    def graph_sizes(graphs: Any, _: tuple) -> dict:
        return {"cuda_graph_sizes": len(graphs.sizes)}

    model_runner.load_model = timed("load_weights", model_runner.load_model, weight_bytes)
    model_runner.ModelRunner._count_blocks = timed(
        "kv_sizing", model_runner.ModelRunner._count_blocks, lambda n, _: {"num_kv_blocks": n}
    )
    model_runner.DecodeGraphs = timed("graph_capture", model_runner.DecodeGraphs, graph_sizes)
    engine.LLMEngine.__init__ = timed("engine", engine.LLMEngine.__init__)
    return worker_main.main(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None  # not listening yet


def measure(preset: str, device: str, dtype: str, timeout_s: float, log: Path) -> dict:
    """One cold start of the preset's worker; raises with the worker's log tail when it never gets ready."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker_args = ["--model", f"random:{preset}", "--device", device, "--dtype", dtype]
    worker_args += ["--host", "127.0.0.1", "--port", str(port), "--drain-timeout-s", "0"]
    with tempfile.TemporaryDirectory() as scratch:
        phases_file = Path(scratch) / "phases.jsonl"
        env = os.environ | {
            PHASES_ENV: str(phases_file),
            "TRITON_CACHE_DIR": str(Path(scratch) / "triton"),  # empty, as in a fresh pod
            "PYTHONUNBUFFERED": "1",
        }
        t0 = time.time()
        env["GOODPUT_COLD_START_T0"] = repr(t0)
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.cold_start", "--child", *worker_args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).parents[1],
            )
            try:
                health_s = ready_s = None
                while ready_s is None:
                    if proc.poll() is not None or time.time() - t0 > timeout_s:
                        why = f"exited {proc.returncode}" if proc.returncode is not None else "timed out"
                        raise RuntimeError(f"worker {preset} on {device} {why}:\n{log.read_text()[-3000:]}")
                    if health_s is None and status(base + "/health") == 200:
                        health_s = time.time() - t0
                    if health_s is not None and status(base + "/ready") == 200:
                        ready_s = time.time() - t0
                    time.sleep(0.02)
            finally:
                stop(proc)
        events = [json.loads(line) for line in phases_file.read_text().splitlines()]
    return summarize(preset, device, dtype, t0, health_s, ready_s, events)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summarize(
    preset: str, device: str, dtype: str, t0: float, health_s: float, ready_s: float, events: list[dict]
) -> dict:
    """Phase durations; warm_up is what follows the engine's construction until /ready (the warm-up
    generation and attaching the engine to the server)."""
    by_phase = {e["phase"]: e for e in events}
    missing = {"interpreter", "imports", "load_weights", "kv_sizing", "engine"} - set(by_phase)
    if missing:
        raise RuntimeError(f"the worker recorded no {', '.join(sorted(missing))} phase")
    phases = {name: e["end"] - e["start"] for name, e in by_phase.items()}
    phases["warm_up"] = t0 + ready_s - by_phase["engine"]["end"]
    return {
        "model": f"random:{preset}",
        "device": device,
        "dtype": dtype,
        "weight_bytes": by_phase["load_weights"]["weight_bytes"],
        "health_s": health_s,
        "ready_s": ready_s,
        "phases_s": phases,
        "num_kv_blocks": by_phase["kv_sizing"]["num_kv_blocks"],
        "cuda_graph_sizes": by_phase.get("graph_capture", {}).get("cuda_graph_sizes", 0),
    }


def machine(device: str) -> tuple[str, str]:
    """(device name, machine description) for the JSON."""
    import torch

    cores = len(os.sched_getaffinity(0))
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    host = f"{cores} CPU cores ({cpu}), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(), host
    return f"cpu: {cpu}", host


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--preset", action="append", required=True, help="repeat for several presets")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per cold start")
    parser.add_argument("--log", type=Path, help="the workers' output (default: a temporary file)")
    args = parser.parse_args()
    import torch

    device, host = machine(args.device)
    result = {
        "schema": SCHEMA,
        "device": device,
        "machine": host,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "weights": "random preset weights generated on the host CPU (a real model reads safetensors)",
        "runs": [],
    }
    log = args.log or Path(tempfile.mkstemp(prefix="cold_start_", suffix=".log")[1])
    for preset in args.preset:
        load_1m = os.getloadavg()[0]  # a shared machine's other work slows every phase
        run = measure(preset, args.device, args.dtype, args.timeout_s, log) | {"host_load_1m_before": load_1m}
        result["runs"].append(run)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))  # each run as soon as it is measured
        print(
            f"{run['model']} on {args.device}: /health {run['health_s']:.1f} s, /ready {run['ready_s']:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
