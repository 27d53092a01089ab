"""Images per minute for one prompt file: `lcm-run batch` against a shell loop of `lcm-run` calls and
against the Python API in a loop, on one bundle, on a quiet machine.

    python -m benchmarks.batch --bundle BUNDLE [--prompts 20] [--size 512] [--rounds 2]

Each system makes the same images (same prompts, seeds, steps and size) from a fresh process with
a filled compile cache. `lcm-run batch` and the API loop take turns, in alternating order, for
--rounds rounds, and the ratio is the median of the per-round ratios, so that the VM's drift between
one system's run and the next cancels; the shell loop, far behind, runs once.
Writes benchmarks/results/batch/batch-<machine>-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
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
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-shell-loop", action="store_true", help="skip the (slow) shell loop of lcm-run")
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

    def run_batch() -> float:
        shutil.rmtree(WORK / "batch", ignore_errors=True)
        return timed(
            [*lcm_run, "batch", str(prompts), "--model", str(args.bundle), "--output", str(WORK / "batch"), *size]
        )

    def run_api_loop() -> float:
        shutil.rmtree(WORK / "api", ignore_errors=True)
        (WORK / "api").mkdir()
        return timed(
            [sys.executable, "-c", API_LOOP, str(args.bundle), str(prompts), str(args.size), str(WORK / "api")]
        )

    systems = {"lcm-run batch": run_batch, "Python API loop": run_api_loop}
    rounds: list[dict[str, float]] = []
    for index in range(args.rounds):
        names = list(systems) if index % 2 == 0 else list(reversed(systems))
        rounds.append({name: systems[name]() for name in names})
        print(
            f"round {index + 1}: " + ", ".join(f"{name} {value:.1f} s" for name, value in rounds[-1].items()),
            flush=True,
        )
    seconds = {name: statistics.median(one[name] for one in rounds) for name in systems}
    if not args.no_shell_loop:
        started = time.perf_counter()
        for index, row in enumerate(rows):
            output = str(WORK / "loop" / f"{index}.png")
            timed(
                [*lcm_run, row["prompt"], "--model", str(args.bundle), "--seed", str(row["seed"]), *size, "-o", output]
            )
        seconds["shell loop of lcm-run"] = time.perf_counter() - started
    # Rate ratio batch/API of one round is the API's seconds over batch's.
    round_ratios = [one["Python API loop"] / one["lcm-run batch"] for one in rounds]

    per_minute = {name: 60 * args.prompts / value for name, value in seconds.items()}
    results: dict[str, Any] = {
        "machine": machine_facts(),
        "bundle": str(args.bundle),
        "size": args.size,
        "prompts": args.prompts,
        "seconds": seconds,
        "images_per_minute": per_minute,
        "rounds": rounds,
        "batch_over_api_per_round": round_ratios,
        "batch_over_api": statistics.median(round_ratios),
    }
    for name, rate in per_minute.items():
        print(f"{name}: {rate:.2f} images/min ({seconds[name]:.1f} s)")
    spread = f"{min(round_ratios):.3f}x to {max(round_ratios):.3f}x"
    print(f"lcm-run batch / API loop: {results['batch_over_api']:.3f}x, rounds {spread} (target >= 0.95x)")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%MZ", time.gmtime())
    path = RESULTS / f"batch-{machine_slug(results['machine'])}-{stamp}.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
