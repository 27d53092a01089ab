"""Images per minute for one prompt file: `lcm-run batch` against a shell loop of `lcm-run` calls and
against the Python API in a loop, on one bundle, one after the other on a quiet machine.

    python -m benchmarks.batch --bundle BUNDLE [--prompts 20] [--size 512]

Each system makes the same images (same prompts, seeds, steps and size) from a fresh process with
a filled compile cache. Writes benchmarks/results/batch/batch-<machine>-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from .machine import machine_facts, machine_slug

# Apart from the harness's results: its report reads every file in results/ as a full run.
RESULTS = Path(__file__).resolve().parent / "results" / "batch"
WORK = Path(__file__).resolve().parent / ".work" / "batch"

API_LOOP = textwrap.dedent(
    """
    import json, sys
    from lcm_runtime import LCMPipeline
    rows = [json.loads(line) for line in open(sys.argv[2])]
    size = int(sys.argv[3])
    pipe = LCMPipeline.from_pretrained(sys.argv[1])
    for index, row in enumerate(rows):
        pipe(row["prompt"], height=size, width=size, generator=row["seed"]).images[0].save(f"{sys.argv[4]}/{index}.png")
    """
)


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    rows = [
        {"prompt": f"a photo of object number {index}, studio light", "seed": index} for index in range(args.prompts)
    ]
    prompts = WORK / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    lcm_run = [sys.executable, "-m", "lcm_runtime.cli"]
    size = ["--width", str(args.size), "--height", str(args.size)]
    # Fill the compile cache at this size first, so that no system pays for compiling.
    timed([*lcm_run, "warm", "--model", str(args.bundle), *size, "--output", str(WORK / "warm.png")])

    seconds: dict[str, float] = {}
    seconds["lcm-run batch"] = timed(
        [*lcm_run, "batch", str(prompts), "--model", str(args.bundle), "--output", str(WORK / "batch"), *size]
    )
    (WORK / "api").mkdir()
    seconds["Python API loop"] = timed(
        [sys.executable, "-c", API_LOOP, str(args.bundle), str(prompts), str(args.size), str(WORK / "api")]
    )
    started = time.perf_counter()
    for index, row in enumerate(rows):
        output = str(WORK / "loop" / f"{index}.png")
        timed([*lcm_run, row["prompt"], "--model", str(args.bundle), "--seed", str(row["seed"]), *size, "-o", output])
    seconds["shell loop of lcm-run"] = time.perf_counter() - started

    per_minute = {name: 60 * args.prompts / value for name, value in seconds.items()}
    results: dict[str, Any] = {
        "machine": machine_facts(),
        "bundle": str(args.bundle),
        "size": args.size,
        "prompts": args.prompts,
        "seconds": seconds,
        "images_per_minute": per_minute,
        "batch_over_api": per_minute["lcm-run batch"] / per_minute["Python API loop"],
    }
    for name, rate in per_minute.items():
        print(f"{name}: {rate:.2f} images/min ({seconds[name]:.1f} s)")
    print(f"lcm-run batch / API loop: {results['batch_over_api']:.3f}x (target >= 0.95x)")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%MZ", time.gmtime())
    path = RESULTS / f"batch-{machine_slug(results['machine'])}-{stamp}.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
