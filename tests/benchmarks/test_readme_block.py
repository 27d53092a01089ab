"""The README's benchmark numbers and docs/benchmarks.md come from the latest results file, never by hand.

When one of these fails after a benchmark run or an edit: `python -m benchmarks report` regenerates
both from the latest results file (measuring nothing).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README_LIMIT = 8192  # bytes: the README is a newcomer's first two minutes; the rest lives in docs/
REGENERATE = "regenerate it with `python -m benchmarks report`"


def test_readme_block_is_the_latest_results_rendered(benchmarks_package: ModuleType) -> None:
    from benchmarks import readme_block

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    expected = readme_block.expected_block()
    assert readme_block.read_block(readme) == expected, (
        f"README.md's benchmark block is stale or edited by hand; {REGENERATE}"
    )
    assert readme_block.latest_results_file().name in expected
    assert "Each CPU's latest run" in expected  # the committed results hold two CPU kinds
    assert "docs/benchmarks/headline.png" in expected and (REPO_ROOT / "docs" / "benchmarks" / "headline.png").is_file()


def test_benchmark_page_is_the_latest_results_rendered(benchmarks_package: ModuleType) -> None:
    from benchmarks import readme_block
    from benchmarks.report_markdown import render_markdown

    latest = readme_block.latest_results_file()
    plots = [f"benchmarks/{name}" for name in ("headline.png", "latency.png", "stages.png")]
    assert all((REPO_ROOT / "docs" / plot).is_file() for plot in plots)
    page = render_markdown(
        json.loads(latest.read_text(encoding="utf-8")),
        readme_block.source_name(latest),
        plots,
        readme_block.per_cpu_entries(readme_block.DOCS_PAGE),
    )
    assert (REPO_ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8") == page, (
        f"docs/benchmarks.md is stale or edited by hand; {REGENERATE}"
    )
    assert page.split("\n# Benchmarks\n", 1)[1].lstrip().startswith("![")  # the plot first


def test_readme_is_at_most_8_kib() -> None:
    size = (REPO_ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes, over {README_LIMIT}: move detail to docs/"


def test_readme_links_resolve() -> None:
    """Every relative link of the README and of docs/README.md points at a file of the repository."""
    import re

    for page in (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "README.md"):
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_latest_results_file_goes_by_the_date_inside(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    from benchmarks.readme_block import latest_results_file

    def write(name: str, date: str, mode: str = "full") -> None:
        (tmp_path / name).write_text(json.dumps({"date": date, "mode": mode}))

    write("a-machine-2026-01-02T0000Z.json", "2026-01-02T00:00:00+00:00")
    write("z-machine-2026-01-01T0000Z.json", "2026-01-01T00:00:00+00:00")  # sorts last by name, ran first
    write("quick.json", "2027-01-01T00:00:00+00:00", mode="quick")  # a --quick run never counts
    partial = {"date": "2027-01-01T00:00:00+00:00", "mode": "full", "settings": {"only": ["lcm-run"]}}
    (tmp_path / "partial.json").write_text(json.dumps(partial))  # nor an --only run, wherever it lies
    (tmp_path / "checks").mkdir()  # partial runs kept apart are not looked at
    (tmp_path / "checks" / "later.json").write_text(json.dumps({"date": "2028-01-01T00:00:00+00:00", "mode": "full"}))
    assert latest_results_file(tmp_path).name == "a-machine-2026-01-02T0000Z.json"
    with pytest.raises(FileNotFoundError):
        latest_results_file(tmp_path / "checks" / "none")


def test_block_numbers_come_from_the_results(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    from test_report import fake_results, fake_run

    from benchmarks import readme_block

    results = fake_results(
        [
            fake_run("lcm-run", "lcm-run", "default", 14.0, rss_gib=3.0),
            fake_run("genai", "openvino.genai", "default", 15.4, rss_gib=4.0),
            fake_run("lcm-run-fast", "lcm-run", "default", 6.0, variant="fast", model="bundle-fast", rss_gib=1.5),
            fake_run("lcm-run-f32", "lcm-run", "f32", 40.0, rss_gib=5.0),
            fake_run(
                "lcm-run-768", "lcm-run", "default", 30.0, timed=1, height=768, width=768
            ),  # another size: not here
        ]
    )
    results["cold_start"] = [
        {
            "name": "filled cache",
            "status": "ok",
            "reference": "lcm-run",
            "process": {"first_png_seconds": 16.5, "peak_rss_bytes": 2 * 2**30},
        }
    ]
    block = readme_block.render_block(results, "benchmarks/results/r.json", "docs/benchmarks/headline.png")
    assert block.startswith(readme_block.START) and block.endswith(readme_block.END)
    assert "from benchmarks/results/r.json" in block and "on CPU (2 CPUs, AMX, 16 GiB RAM)" in block
    assert "| **lcm-run** (defaults) | bf16 | 14.0 s | 0.91× | 3.00 GiB | 0.75× |" in block  # 14/15.4, 3/4
    assert "| **lcm-run `--fast`** | INT8 UNet, TAESD, bf16 | 6.00 s | 0.39× | 1.50 GiB | 0.38× |" in block
    assert "| openvino.genai | bf16 | 15.4 s | 1.00× | 4.00 GiB | 1.00× |" in block
    assert (
        "| **lcm-run** f32: diffusers' exact image | bf16 | 40.0 s | – | 5.00 GiB | – |" in block
    )  # the fake ran bf16
    assert "768" not in block and "optimum" not in block  # other sizes, and rows the results lack
    assert (
        "`--fast` takes 0.43× the default's time" in block
        and "16.5 s from start to PNG (+2.5 s over warm), peak 2.00 GiB" in block
    )

    # A --fast bundle whose TAESD decoder was quantized too (lcm-export --quantize-tiny-vae) says so.
    results["model"]["bundles"]["bundle-fast"] = {"path": "/b/f", "bytes": 1, "tiny_vae_precision": "int8-ptq"}
    block_int8_taesd = readme_block.render_block(results, "benchmarks/results/r.json", "docs/benchmarks/headline.png")
    assert "| **lcm-run `--fast`** | INT8 UNet, INT8 TAESD, bf16 | 6.00 s |" in block_int8_taesd

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{readme_block.START}\nhand-typed 1.23 s\n{readme_block.END}\nafter\n")
    assert readme_block.update_readme(readme, block)
    assert readme.read_text() == f"# x\n\nbefore\n{block}\nafter\n"
    assert not readme_block.update_readme(readme, block)  # already current: untouched
    readme.write_text("# no block\n")
    with pytest.raises(ValueError, match="benchmark block"):
        readme_block.update_readme(readme, block)


def test_report_rewrites_the_readme_only_when_asked(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    from benchmarks import readme_block
    from benchmarks.report import main

    latest = readme_block.latest_results_file()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{readme_block.START}\n{readme_block.END}\n")
    main([str(latest), "--docs", str(tmp_path / "page.md")])  # a page elsewhere, no --readme: README untouched
    assert readme.read_text() == f"intro\n{readme_block.START}\n{readme_block.END}\n"
    main([str(latest), "--docs", str(tmp_path / "docs" / "benchmarks.md"), "--readme", str(readme)])
    block = readme_block.read_block(readme.read_text())
    assert "![Latency and peak memory" in block and "(docs/benchmarks/headline.png)" in block
    assert latest.name in block


def test_each_cpu_kind_shows_its_latest_run(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    """Full and headline-only runs of two CPU kinds: the newest of each kind is its row, newest kind
    first; interleaved ratios carry their range, ratios measured apart do not."""
    from test_report import fake_results, fake_run

    from benchmarks import readme_block

    def write(folder: Path, name: str, date: str, flags: dict, lcm_run_seconds: float, interleaved: bool) -> None:
        lcm_run = fake_run("lcm-run", "lcm-run", "default", lcm_run_seconds, rss_gib=2.0)
        genai = fake_run("genai", "openvino.genai", "default", 10.0, rss_gib=4.0)
        if interleaved:
            lcm_run["interleaved_with"], genai["interleaved_with"] = ["genai"], ["lcm-run"]
        results = fake_results([lcm_run, genai])
        results["date"], results["machine"]["flags"] = date, flags
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(json.dumps(results))

    full, headline = tmp_path / "results", tmp_path / "results" / "headline"
    write(full, "xeon-old.json", "2026-01-01T00:00:00+00:00", {"amx_bf16": True}, 8.0, interleaved=False)
    write(headline, "xeon-new.json", "2026-03-01T00:00:00+00:00", {"amx_bf16": True}, 9.0, interleaved=True)
    write(full, "zen.json", "2026-02-01T00:00:00+00:00", {"avx512_bf16": True}, 11.0, interleaved=False)
    entries = readme_block.per_cpu_entries(tmp_path / "README.md", (full, headline))
    assert [name for name, _results in entries] == ["results/headline/xeon-new.json", "results/zen.json"]

    lines = readme_block.per_cpu_lines(entries)
    assert lines[0].startswith("| CPU | Run | lcm-run × genai | `--fast` × genai |")
    # 9/10, 9.9/11, 8.1/9 round by round: all 0.90; the fakes have no --fast or f32 rows.
    assert (
        lines[2]
        == "| CPU (AMX, 2 CPUs) | [2026-03-01](results/headline/xeon-new.json) | 0.90× (0.90–0.90) | – | – | 0.50× |"
    )
    assert lines[3] == "| CPU (avx512_bf16, no AMX, 2 CPUs) | [2026-02-01](results/zen.json) | 1.10× | – | – | 0.50× |"
