"""How long a new worker pod takes from creation to ready: a model of the worker's own start, phase by phase.

The simulator delays every new replica by this much (a flat 90 s before). Each phase says where its number
comes from; the GPU phases are estimates until a measured GPU cold start (bench/results/cold_start.json) exists.

- schedule_s: the pod scheduled and its container started with the image already on the node (an autoscaling
  fleet pre-pulls its image; a pull of a multi-GB CUDA image takes minutes and is not modelled). A few seconds
  on a warm node: kubelet pod sync, sandbox and container start.
- process_s: the interpreter and the worker's imports (torch, CUDA libraries). Measured on CPU by
  bench/results/cold_start_cpu.json: interpreter + imports 5.5 to 6.9 s on a loaded 2-core host.
- weights: the model's bytes (each TP rank reads its shard in parallel) at the node's local disk bandwidth;
  2 GB/s is a local NVMe SSD's sequential read, the common GPU-node instance store. A network volume is slower.
- warm_up_s: CUDA context, KV-cache allocation and the first steps (CUDA-graph capture where used). Estimated:
  tens of seconds in vLLM's startup logs for an 8B model; the CPU worker's engine set-up and warm-up for a
  0.5B model took 22 s (cold_start_cpu.json).
"""

from __future__ import annotations

from dataclasses import dataclass

from goodput.policies.profiles import ModelProfile


@dataclass(frozen=True)
class StartModel:
    schedule_s: float = 3.0
    process_s: float = 7.0
    disk_bytes_per_s: float = 2.0e9
    warm_up_s: float = 20.0

    def delay_s(self, model: ModelProfile, tensor_parallel: int = 1) -> float:
        """Seconds from pod creation until the replica serves."""
        weights_s = model.weight_bytes / max(tensor_parallel, 1) / self.disk_bytes_per_s
        return self.schedule_s + self.process_s + weights_s + self.warm_up_s
