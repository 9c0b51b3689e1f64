"""`python -m search.bench`: ratios of side-by-side runs, a table and a JSON record. The tests
check the plumbing and the arithmetic, never a speed (DESIGN.md: no timed tests)."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from search.bench.cli import (
    GPU_SECTIONS,
    ON_REQUEST,
    SECTIONS,
    gpu_label,
    main,
    readme_table,
    records_in,
    row,
    table,
    write_readme,
)
from search.bench.efficiency import ARMS, anytime, arm_seed, best_so_far, comparison_rows, epochs_to
from search.bench.rows import ratio_interval
from search.engine.searcher import make_sampler
from tests.helpers import without_packages
from trainables.errors import ConfigError


def test_a_ratio_reads_times_better_for_medtune_whichever_way_is_better() -> None:
    faster = row("input", "images/s", 300.0, 100.0, higher_is_better=True)
    leaner = row("input", "CPU s/image", 0.01, 0.04, higher_is_better=False)
    slower = row("train", "images/s", 50.0, 100.0, higher_is_better=True)
    assert (faster["ratio"], leaner["ratio"], slower["ratio"]) == (3.0, 4.0, 0.5)
    assert "3" in table([faster]).splitlines()[1]


def test_an_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown section speed; known: input, train, limit, "
                       "threads, overhead, efficiency, scale, gain, replay, reproducible, "
                       "warmstart, demos"):
        main(["speed"])


@pytest.mark.slow
def test_quick_bench_measures_both_sides_of_every_section(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # input, train and limit: cluster/gpu_check.sh's test below runs them
    out = tmp_path / "bench.json"
    assert main(["--quick", "--out", str(out), *(s for s in SECTIONS if s not in (
        *ON_REQUEST, *GPU_SECTIONS))]) == 0
    record = json.loads(out.read_text())
    rows = {(r["section"], r["measure"]): r for r in record["rows"]}
    assert {s for s, _ in rows} == {"threads", "overhead", "efficiency", "scale", "gain",
                                    "replay", "reproducible", "warmstart"}
    for key in [("threads", "2 threads: images/s vs 1 thread"),
                ("overhead", "s per tiny trial in a search (W&B offline) vs plain"),
                ("scale", "trials per minute, 2 worker nodes vs 1"),
                ]:
        row = rows[key]
        # a search's seconds per trial: the difference of a 2-trial and a 1-trial search, whose
        # starts vary by seconds here, so in a quick run it may come out below zero
        assert (key[0] == "overhead" or row["ours"] > 0) and row["baseline"] > 0, row
        assert row["ratio"] == pytest.approx(
            row["ours"] / row["baseline"] if row["better"] == "higher"
            else row["baseline"] / row["ours"])
    check_work(record, rows, ["threads"])
    overhead = rows[("overhead", "s a search adds per trial (W&B offline)")]
    steady = rows[("overhead", "s per tiny trial in a search (W&B offline) vs plain")]
    assert overhead["ours"] == pytest.approx(steady["ours"] - steady["baseline"])
    # Ray's start: a 1-trial search that starts Ray less one on the running Ray, both a few
    # seconds long and one run each in a quick run: under load its sign is noise
    assert math.isfinite(rows[("overhead", "s to start a local Ray (once)")]["ours"])
    assert rows[("scale", "trials per minute, 2 worker nodes vs 1")]["nodes_used"] == [2]
    gain = [r for (s, _), r in rows.items() if s == "gain"]  # QWK and macro AUROC, both ways
    assert len(gain) == 2 and all(r["ours"] > 0 and r["baseline"] > 0 for r in gain)
    # efficiency and replay: every method against random search, a seed each, and a figure
    for section in ("efficiency", "replay"):
        total = [r for (s, m), r in rows.items() if s == section and m.endswith(
            "TPE + ASHA: epochs in the whole search")]
        assert len(total) == 1 and total[0]["baseline"] > 0 and total[0]["spread"][0]
        assert (tmp_path / total[0]["figure"]).is_file()
    cost = next(r for (s, m), r in rows.items() if s == "reproducible" and "minutes" in m)
    assert cost["ours"] > 0 and cost["baseline"] > 0  # a seed, free-running and in batches
    # a seed: cold and warm epochs, warm-started from the same table and from the related set
    # (the experiment on the APTOS-format demo), both against the same cold search
    warm = [r for (s, _), r in rows.items() if s == "warmstart"]
    assert [r["source"] for r in warm] == ["same", "deepdrid_finetune-aptos"]
    assert "aptos-seed0-v1 (aptos)" in warm[1]["measure"]
    assert all(r["baseline"] >= 1 and r["target"] == 2.0 for r in warm)
    assert warm[0]["spread"][1] == warm[1]["spread"][1]
    error = next(r for (s, m), r in rows.items() if s == "replay" and "held-out error" in m)
    assert 0 <= error["ours"] < 0.2  # the surrogate of a committed table
    env = record["environment"]
    assert env["python"] and env["cpus"] and env["git_commit"] and env["packages"]["torch"]
    assert record["params"]["image_size"] == 96 and record["params"]["quick"]
    printed = capsys.readouterr().out
    assert "x better" in printed and f"written to {out}" in printed


def check_work(record: dict[str, Any], rows: dict[tuple[str, str], dict[str, Any]],
               sections: list[str]) -> None:
    """Each speed is the median of its side's raw runs, and the sides did the work they should,
    counted from the data and the parameters, not from the rows: every image of the bench
    set's training CSV (whole batches) per timed pass; the trainable and the plain loop its
    batches per epoch (as many as the data has, up to train_batches); the model alone always
    train_batches (it trains on tensors it made)."""
    p = record["params"]
    whole = len(pd.read_csv(Path(p["data"]) / "train.csv")) // p["batch"]
    passes = whole * p["batch"] * p["epochs"]
    trained = min(whole, p["train_batches"]) * p["batch"] * p["epochs"]
    alone = p["train_batches"] * p["batch"] * p["epochs"]
    model = p["model"]
    work = {"input": (("input", "images/s"), (passes, passes)),
            "train": (("train", f"{model} images/s"), (trained, trained)),
            "limit": (("limit", "trainable / model alone, training images/s"), (trained, alone)),
            "threads": (("threads", "2 threads: images/s vs 1 thread"), (trained, trained))}
    for section in sections:
        key, images_of = work[section]
        for side, images in zip(("ours", "baseline"), images_of, strict=True):
            raw = rows[key]["runs"][side]
            assert [m["images"] for m in raw] == [images] * len(raw), (key, side)
            assert rows[key][side] == pytest.approx(
                statistics.median(m["images"] / m["seconds"] for m in raw)), (key, side)
            assert rows[key]["ratio"] == pytest.approx(
                rows[key]["ours"] / rows[key]["baseline"])


@pytest.mark.slow
def test_the_gpu_check_runs_on_a_cpu_without_ray_optuna_or_wandb(tmp_path: Path) -> None:
    """cluster/gpu_check.sh on a machine without CUDA: tests/gpu skip saying why, and the
    bench's input, train and limit run at --quick sizes on the CPU, for resnet18 and
    efficientnet_b0, every process of it unable to import Ray, Optuna or wandb (a bare GPU
    box has none of them); the records land in OUT and the table comes last."""
    out = tmp_path / "out"
    root = Path(__file__).parents[1]
    bare = without_packages(tmp_path / "site", "ray", "optuna", "wandb")  # every Python it starts
    done = subprocess.run([str(root / "cluster" / "gpu_check.sh"), str(out)], capture_output=True,
                          text=True, timeout=900, env={**bare, "PYTHON": sys.executable})
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-5000:]
    assert "no CUDA GPU visible: tests/gpu skip" in said
    suite = ET.parse(out / "gpu-tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    skips = [case.find("skipped") for case in suite.iter("testcase")]
    assert len(skips) == int(suite.get("tests", 0)) >= 8
    assert all(skip is not None and "needs a CUDA GPU" in skip.get("message", "") for skip in skips)
    for model, sections in (("resnet18", ["input", "train", "limit"]),
                            ("efficientnet_b0", ["train", "limit"])):
        record = json.loads((out / f"bench-gpu-{model}.json").read_text())
        assert record["params"]["model"] == model and record["params"]["quick"]
        assert not record["params"].get("gpu")  # no GPU here: the CPU, at --quick sizes
        rows = {(r["section"], r["measure"]): r for r in record["rows"]}
        assert {s for s, _ in rows} == set(sections)
        check_work(record, rows, sections)
    record = json.loads((out / "bench-gpu-resnet18.json").read_text())
    build = next(r for r in record["rows"] if r["measure"].startswith("cache build images/s"))
    one, every = build["runs"]["baseline"][0], build["runs"]["ours"][0]
    # the cold builds decoded every image of the set, once with 1 process, once with a core each
    images = sum(len(pd.read_csv(Path(record["params"]["data"]) / f"{split}.csv"))
                 for split in ("train", "val", "test"))
    assert one["cached_images"] == every["cached_images"] == images and one["cache_built"]
    assert build["ours"] == pytest.approx(images / every["cache_build_seconds"])
    assert "tests/gpu: 0 passed, 0 failed, 8 skipped" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("limit ")  # the table, last
    assert (out / "gpu-check.log").read_text() == done.stdout  # kept beside the records


@pytest.mark.slow
def test_the_train_section_runs_on_a_multi_label_experiments_data(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["train", "--quick", "--experiment", "rfmid_multilabel", "--out",
                 str(out)]) == 0
    record = json.loads(out.read_text())
    assert (record["params"]["task"], record["params"]["dataset"]) == ("multilabel", "rfmid")
    row = next(r for r in record["rows"] if r["measure"] == "resnet18 images/s")
    assert row["ours"] > 0 and row["baseline"] > 0


def test_epochs_to_a_target_count_every_finished_epoch_of_every_trial() -> None:
    values = [0.1, float("nan"), 0.5, 0.3, 0.7, 0.6]
    assert best_so_far(values, "max")[:3] == [0.1, 0.1, 0.5]
    assert best_so_far([0.9, 0.4, 0.6], "min") == [0.9, 0.4, 0.4]
    assert (epochs_to(values, 0.5, "max"), epochs_to(values, 0.7, "max")) == (3, 5)
    assert epochs_to(values, 0.8, "max") is None
    assert epochs_to([0.9, 0.4], 0.5, "min") == 2


def _run(values: list[float]) -> dict:
    return {"values": values, "minutes": [i / 2 for i in range(1, len(values) + 1)]}


RUNS = {  # three seeds an arm
    "random-fifo": [_run([0.1, 0.5, 0.6]), _run([0.2, 0.3, 0.9]), _run([0.4, 0.4, 0.7])],
    "tpe-fifo": [_run([0.7, 0.95, 0.2]), _run([0.7, 0.1, 0.1]), _run([0.8, 0.1, 0.1])],
    "random-asha": [_run([0.1, 0.2]), _run([0.3]), _run([0.6, 0.65])],
    "tpe-asha": [_run([0.8]), _run([0.5, 0.75]), _run([0.1, 0.2])],
}


def test_each_method_against_random_search_by_hand() -> None:
    rows = {(r["arm"], r["measure"].split(": ")[1].split(" ")[0]): r
            for r in comparison_rows("efficiency", RUNS, "max", "val/kappa")}
    # random search's final bests 0.6, 0.9, 0.7: at least two of three reach 0.7 (the target)
    epochs = rows[("tpe-asha", "epochs")]
    assert "median best val/kappa (0.700)" in epochs["measure"]
    # random: never, 3, 3 -> lower median 3; TPE + ASHA: 1, 2, never -> 2; 3/2 = 1.5 times
    assert epochs["spread"] == [[1.0, 2.0, math.inf], [math.inf, 3.0, 3.0]]
    assert (epochs["ours"], epochs["baseline"], epochs["ratio"]) == (2.0, 3.0, 1.5)
    assert epochs["target"] == 3.0 and not epochs["met"]
    assert epochs["low"] <= epochs["ratio"] <= epochs["high"]
    assert rows[("tpe-fifo", "epochs")]["ratio"] == 3.0  # 1 epoch each, no target of its own
    assert "target" not in rows[("tpe-fifo", "epochs")]
    assert rows[("random-asha", "epochs")]["ratio"] == 0.0  # it never gets there
    assert rows[("tpe-asha", "minutes")]["ratio"] == 1.5  # half a minute an epoch
    # regret at equal epochs: TPE + ASHA spends 1, 2, 2 (lower median 2), random 3: at 2 epochs
    # the best known is 0.95 (TPE alone); TPE + ASHA holds 0.8, 0.75, 0.2 -> regrets 0.15,
    # 0.2, 0.75 (median 0.2); random holds 0.5, 0.3, 0.4 -> 0.45, 0.65, 0.55 (median 0.55)
    regret = rows[("tpe-asha", "regret")]
    assert "regret at 2 epochs (best known 0.950)" in regret["measure"]
    assert regret["spread"] == [pytest.approx([0.15, 0.2, 0.75]), pytest.approx([0.45, 0.65, 0.55])]
    assert regret["ratio"] == pytest.approx(0.55 / 0.2)


def test_the_arms_never_share_their_start_up_trials() -> None:
    import optuna

    def first(sampler: optuna.samplers.BaseSampler) -> list[float]:
        study = optuna.create_study(sampler=sampler)
        return [study.ask().suggest_float("lr", 1e-5, 1e-2, log=True) for _ in range(4)]

    # with one seed, TPE's random start-up trials are random search's, exactly
    assert first(make_sampler(0, 4)) == first(optuna.samplers.RandomSampler(seed=0))
    seeds = {arm: arm_seed(arm, 0) for arm in ARMS}
    assert len(set(seeds.values())) == len(ARMS)
    assert first(make_sampler(seeds["tpe-asha"], 4)) != first(
        optuna.samplers.RandomSampler(seed=seeds["random-fifo"]))


def test_anytime_curves_hold_a_finished_runs_best() -> None:
    runs = [_run([0.1, 0.5]), _run([0.3])]
    low, mid, high = anytime(runs, "max", np.array([1.0, 2.0, 3.0]))
    assert mid.tolist() == pytest.approx([0.2, 0.4, 0.4])
    # quartiles of two values a and b (a < b), interpolated: a + (b - a) / 4 and a + 3(b - a) / 4
    assert low.tolist() == pytest.approx([0.15, 0.35, 0.35])
    assert high.tolist() == pytest.approx([0.25, 0.45, 0.45])
    mid = anytime(runs, "max", np.array([0.25, 0.5, 1.0]), clock="minutes")[1]
    assert np.isnan(mid[0]) and mid[1:].tolist() == pytest.approx([0.2, 0.4])


def test_a_ratio_interval_comes_from_resampled_seeds() -> None:
    ratio, low, high = ratio_interval([1.0] * 5, [3.0] * 5)
    assert ratio == low == high == 3.0  # no spread over seeds: no width
    ratio, low, high = ratio_interval([1.0, 2.0, 4.0, 8.0, 16.0], [10.0] * 5)
    assert ratio == 2.5 and low < ratio < high and high == 10.0


def test_the_readme_table_comes_from_the_newest_full_record_of_each_section(tmp_path: Path) -> None:
    def record(name: str, finished: str, rows: list[dict], quick: bool = False,
               changed: list[str] | None = None) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps({"params": {"quick": quick}, "finished": finished, "rows": rows,
                                    "environment": {"git_commit": "abcdef0123",
                                                    "git_changed": changed}}))
        return path

    old = record("a.json", "2026-01-01", [row("input", "images/s", 100.0, 10.0, True)])
    new = record("b.json", "2026-02-01", [row("input", "images/s", 300.0, 10.0, True)],
                 changed=["README.md", "results/bench/demos.json"])  # no code: its commit
    quick = record("c.json", "2026-03-01", [row("input", "images/s", 1.0, 1.0, True)], quick=True)
    scale = row("scale", "trials per minute, 2 worker nodes vs 1", 3.4, 2.0, True)
    scale.update(target=1.8, met=False)
    other = record("d.json", "2026-01-15", [scale], changed=["search/bench.py"])
    lines = readme_table([old, new, quick, other]).splitlines()
    assert lines[2] == "| input | images/s | 300 | 10 | 30 |  | `b.json` (abcdef0) |"
    assert lines[3] == ("| scale | trials per minute, 2 worker nodes vs 1 | 3.4 | 2 | 1.7 | "
                        ">= 1.8: MISSED | `d.json` (abcdef0 + changes) |")
    # replay: the newest record of each learning-curve table, however many records hold them
    a = record("r1.json", "2026-04-01", [{**row("replay", "a: x", 2.0, 1.0, True), "table": "a"},
                                          {**row("replay", "b: x", 9.0, 1.0, True), "table": "b"}])
    b = record("r2.json", "2026-05-01", [{**row("replay", "b: x", 3.0, 1.0, True), "table": "b"}])
    (tmp_path / "replay-a-runs.json").write_text(json.dumps({"metric": "x", "runs": {}}))
    assert {p.name for p in records_in(tmp_path)} == {"a.json", "b.json", "c.json", "d.json",
                                                      "r1.json", "r2.json"}
    replay = [line for line in readme_table([a, b]).splitlines() if line.startswith("| replay")]
    assert replay == ["| replay | a: x | 2 | 1 | 2 |  | `r1.json` (abcdef0) |",
                      "| replay | b: x | 3 | 1 | 3 |  | `r2.json` (abcdef0) |"]
    # a --gpu record: its rows apart from the CPU's, marked with the GPU, model and AMP
    gpu = tmp_path / "g.json"
    gpu.write_text(json.dumps({
        "params": {"quick": False, "gpu": True, "model": "resnet18", "amp": "bf16"},
        "finished": "2026-06-01", "rows": [row("input", "images/s", 900.0, 30.0, True)],
        "environment": {"git_commit": "abcdef0123", "git_changed": [], "gpus": ["NVIDIA H200"]}}))
    assert gpu_label(json.loads(gpu.read_text())) == " (GPU: NVIDIA H200, resnet18, bf16)"
    assert readme_table([new, gpu]).splitlines()[2:] == [
        "| input | images/s | 300 | 10 | 30 |  | `b.json` (abcdef0) |",
        "| input (GPU: NVIDIA H200, resnet18, bf16) | images/s | 900 | 30 | 30 |  | `g.json` (abcdef0) |"]
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench table: start -->\nold\n<!-- bench table: end -->\nrest\n")
    write_readme(readme, [new])
    text = readme.read_text()
    assert "old" not in text and "`b.json`" in text and text.endswith("end -->\nrest\n")
    readme.write_text("no markers")
    with pytest.raises(ConfigError, match="no <!-- bench table: start -->"):
        write_readme(readme, [new])
