"""The scheduler's float32 tables, computed with torch exactly as diffusers' LCMScheduler does.

NumPy cannot reproduce torch's linspace/cumprod/sqrt bit for bit (docs/numerics.md), so the
runtime indexes these tables instead of recomputing them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lcm_runtime.bundle import SCHEDULER_TABLES, scheduler_table_file

if TYPE_CHECKING:
    from diffusers import LCMScheduler


def compute_scheduler_tables(scheduler: LCMScheduler) -> dict[str, np.ndarray]:
    import torch

    alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32)
    c_skip, c_out = [], []
    for t in range(int(scheduler.config.num_train_timesteps)):
        # The pipeline hands step() a 0-d int64 tensor taken from scheduler.timesteps.
        skip, out = scheduler.get_scalings_for_boundary_condition_discrete(torch.tensor(t, dtype=torch.int64))
        c_skip.append(torch.as_tensor(skip, dtype=torch.float32).reshape(()))
        c_out.append(torch.as_tensor(out, dtype=torch.float32).reshape(()))
    tables = {
        "alphas_cumprod": alphas_cumprod,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
        "c_skip": torch.stack(c_skip),
        "c_out": torch.stack(c_out),
    }
    assert tuple(tables) == SCHEDULER_TABLES
    return {name: np.ascontiguousarray(table.numpy().astype(np.float32, copy=False)) for name, table in tables.items()}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_scheduler_tables(bundle_root: Path, scheduler: LCMScheduler) -> None:
    for name, table in compute_scheduler_tables(scheduler).items():
        path = Path(bundle_root) / scheduler_table_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(npy_bytes(table))
