"""Host-to-device copies that never make the host wait for the GPU.

A plain copy from pageable memory synchronises the CUDA stream, so every small input tensor of a step
would stall the host until the previous work finished. Staging through pinned memory and copying with
non_blocking=True lets the host run ahead and queue the next step; the caching host allocator keeps the
pinned buffer alive until its copy has completed.
"""

from __future__ import annotations

import numpy as np
import torch


def to_device(
    data: np.ndarray | list, device: torch.device, dtype: torch.dtype = torch.int64
) -> torch.Tensor:
    host = torch.as_tensor(np.asarray(data), dtype=dtype)
    if device.type == "cpu":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def copy_into(dst: torch.Tensor, data: np.ndarray) -> None:
    """Fill the leading rows of a preallocated device buffer (a CUDA graph's static input)."""
    host = torch.from_numpy(np.ascontiguousarray(data)).to(dst.dtype)
    if dst.device.type != "cpu":
        host = host.pin_memory()
    dst[: host.shape[0]].copy_(host, non_blocking=True)
