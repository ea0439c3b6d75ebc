"""Hardware catalog: what each accelerator type offers the performance model.

Peak figures are vendor datasheet numbers (dense, no sparsity). The efficiency factors turn peaks into what a
serving engine reaches in practice: decode streams weights at ~80% of HBM peak (so an H100 SXM reads at
~2.7 TB/s, the figure behind "Llama-3-8B batch-1 TPOT ≈ 6–7 ms"), large GEMMs reach ~60% of peak FLOP/s.
Online calibration (observed / predicted) corrects what these constants get wrong for a given deployment.
"""

from __future__ import annotations

from dataclasses import dataclass

from goodput.crds.inferenceservice import AcceleratorPool, AcceleratorType
from goodput.policies.lookup import by_name

GB = 1e9
GiB = 1 << 30
TB = 1e12


@dataclass(frozen=True)
class Accelerator:
    """One device type. Bandwidths in bytes/s, FLOP/s dense bf16, price in USD per device-hour."""

    name: str
    memory_bytes: float
    hbm_bandwidth: float
    bf16_flops: float
    interconnect_bandwidth: float  # per device, one direction (NVLink or PCIe)
    interconnect_latency_s: float  # per collective hop
    price_per_hour: float
    bandwidth_efficiency: float = 0.8
    flops_efficiency: float = 0.6
    memory_utilisation: float = 0.9  # share of device memory the engine may claim
    reserved_bytes: float = 1.5 * GiB  # CUDA context, allocator slack, graphs
    step_overhead_s: float = 0.0006  # scheduler, sampling and launch cost per engine step
    max_tensor_parallel: int = 8  # devices per node that can share one replica

    @property
    def effective_bandwidth(self) -> float:
        return self.hbm_bandwidth * self.bandwidth_efficiency

    @property
    def effective_flops(self) -> float:
        return self.bf16_flops * self.flops_efficiency

    @property
    def usable_memory_bytes(self) -> float:
        return self.memory_bytes * self.memory_utilisation - self.reserved_bytes


_NVLINK4 = dict(interconnect_bandwidth=450 * GB, interconnect_latency_s=8e-6)
_NVLINK3 = dict(interconnect_bandwidth=300 * GB, interconnect_latency_s=10e-6)
_PCIE4 = dict(interconnect_bandwidth=25 * GB, interconnect_latency_s=25e-6)
_PCIE5 = dict(interconnect_bandwidth=50 * GB, interconnect_latency_s=20e-6)

CATALOG: dict[str, Accelerator] = {
    a.name: a
    for a in (
        Accelerator("H100-SXM", 80 * GB, 3.35 * TB, 989e12, price_per_hour=4.0, **_NVLINK4),
        Accelerator("H100-PCIe", 80 * GB, 2.0 * TB, 756e12, price_per_hour=2.8, **_PCIE5),
        Accelerator("H200", 141 * GB, 4.8 * TB, 989e12, price_per_hour=5.0, **_NVLINK4),
        Accelerator("A100-40GB", 40 * GB, 1.555 * TB, 312e12, price_per_hour=1.6, **_NVLINK3),
        Accelerator("A100-80GB", 80 * GB, 2.039 * TB, 312e12, price_per_hour=2.2, **_NVLINK3),
        Accelerator("L40S", 48 * GB, 0.864 * TB, 362e12, price_per_hour=1.2, **_PCIE4),
        Accelerator("L4", 24 * GB, 0.3 * TB, 121e12, price_per_hour=0.7, **_PCIE4),
        # Server cores running the torch worker. Efficiencies and the per-step cost are fitted to the worker
        # engine on one core (random:tiny decodes in 1.7 ms a step, random:bench-small in 39 ms with a 256-token
        # prefill in 0.29 s); calibration takes over from there.
        Accelerator(
            "CPU",
            16 * GB,
            20 * GB,
            0.2e12,
            interconnect_bandwidth=10 * GB,
            interconnect_latency_s=50e-6,
            price_per_hour=0.05,
            bandwidth_efficiency=0.3,
            flops_efficiency=0.5,
            memory_utilisation=0.5,
            reserved_bytes=0.5 * GiB,
            step_overhead_s=0.0015,
            max_tensor_parallel=1,
        ),
    )
}

assert set(CATALOG) == {t.value for t in AcceleratorType}, "catalog and AcceleratorType must agree"


def accelerator(name: str) -> Accelerator:
    return by_name(CATALOG, name, "accelerator")


def price_of(pool: AcceleratorPool) -> float:
    """USD per device-hour: the pool's price when the manifest sets one, else the catalog's list price."""
    return pool.price_per_hour if pool.price_per_hour is not None else accelerator(pool.type).price_per_hour
