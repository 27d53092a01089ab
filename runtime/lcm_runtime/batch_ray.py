"""`lcm-run batch --ray`: the same job as a Ray Data pipeline (extra ``[ray]``).

The driver plans the job, compares it with the output folder and writes every file and manifest
line, exactly as a local run; only the generation moves: ``map_batches`` over an actor pool, each
actor a batch ``Generator`` (the bundle loaded once per actor). Actors keep OpenVINO's threads on all
the cores they see, as local workers do: fewer threads change the images' last bits (docs/batch.md),
and the PNGs must be identical to a local run's.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from .batch import Failure, Generated, Generator, GeneratorOptions
from .batch_plan import ImageTask
from .ray_start import init_ray


class RayGenerator:
    """One actor of the pool: a Generator, and one task per call (Ray Data hands a batch of rows)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.generator = Generator(GeneratorOptions(**options))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        results = []
        for task in batch["task"]:
            result = self.generator.try_generate(ImageTask.from_dict(pickle.loads(task)))
            results.append(pickle.dumps(result))
        return {"result": results}


def on_ray(
    todo: list[ImageTask],
    options: GeneratorOptions,
    workers: int,
    address: str | None,
    cpus_per_worker: float = 1.0,
) -> Iterator[Generated | Failure]:
    """The tasks on ``workers`` Ray actors of ``cpus_per_worker`` CPUs each; results as they come."""
    import ray

    if not ray.is_initialized():
        init_ray(address, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the batch's own progress bar is the one to show
    tasks = ray.data.from_items([{"task": pickle.dumps(task.to_dict())} for task in todo])
    results = tasks.map_batches(
        RayGenerator,
        fn_constructor_kwargs={"options": asdict(options)},
        batch_size=1,
        concurrency=workers,
        num_cpus=cpus_per_worker,
    )
    for row in results.iter_rows():
        result = pickle.loads(row["result"])
        if not isinstance(result, (Generated, Failure)):
            raise TypeError(f"a Ray worker returned {type(result).__name__}")
        yield result
