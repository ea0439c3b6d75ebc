"""The machine a GPU check ran on: device, driver, library versions, and its two measured ceilings
(device-to-device copy bandwidth, bf16 matrix-product rate), which the other stages' figures are read
against.

    python -m bench.gpu_env --json $OUT/env.json
    python -m bench.gpu_env --cpu --json /tmp/env.json   # the code path on the CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.engine_common import copy_bandwidth, synchronize


def driver_version() -> str | None:
    """nvidia-smi's driver version; None where the tool is absent (the CPU rehearsal)."""
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def matmul_tflops(device: str, n: int, iters: int) -> float:
    """bf16 n x n x n products per second, in TFLOP/s, on random data (zeros run faster than real data)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    synchronize(device)
    return 2 * n**3 * iters / (time.perf_counter() - start) / 1e12


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("triton", "transformers", "fastapi", "uvicorn", "pydantic"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    return versions


def describe(cpu: bool) -> dict:
    if cpu:
        device, copy_bytes, n, iters = "cpu", 16 << 20, 256, 3
        info = {
            "device": f"cpu: {platform.processor() or platform.machine()}",
            "cpu_threads": torch.get_num_threads(),
        }
    else:
        device, copy_bytes, n, iters = "cuda", 2 << 30, 8192, 20
        props = torch.cuda.get_device_properties(0)
        info = {
            "device": torch.cuda.get_device_name(0),
            "gpus": torch.cuda.device_count(),
            "compute_capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_gib": props.total_memory / 2**30,
            "driver": driver_version(),
        }
    return info | {
        "versions": library_versions(),
        "copy_bytes": copy_bytes,
        "copy_bandwidth_gb_s": copy_bandwidth(device, copy_bytes) / 1e9,
        "matmul_bf16_tflops": matmul_tflops(device, n, iters),
        "matmul_size": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--cpu", action="store_true", help="describe the CPU with tiny sizes (rehearsal)")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        sys.exit("gpu_env.py needs a CUDA GPU and none is visible; --cpu describes the CPU instead")
    result = describe(args.cpu)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("device", "copy_bandwidth_gb_s", "matmul_bf16_tflops")}))


if __name__ == "__main__":
    main()
