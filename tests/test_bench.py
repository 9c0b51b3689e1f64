"""`python -m search.bench`: ratios of side-by-side runs, a table and a JSON record. The tests
check the plumbing and the arithmetic, never a speed (DESIGN.md: no timed tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search.bench import main, readme_table, row, table, write_readme
from search.bench_tune import best_so_far, efficiency_rows, epochs_to
from trainables.errors import ConfigError


def test_a_ratio_reads_times_better_for_medtune_whichever_way_is_better() -> None:
    faster = row("input", "images/s", 300.0, 100.0, higher_is_better=True)
    leaner = row("input", "CPU s/image", 0.01, 0.04, higher_is_better=False)
    slower = row("train", "images/s", 50.0, 100.0, higher_is_better=True)
    assert (faster["ratio"], leaner["ratio"], slower["ratio"]) == (3.0, 4.0, 0.5)
    assert "3" in table([faster]).splitlines()[1]


def test_an_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown section speed; known: input, train, limit, "
                       "threads, overhead, efficiency, scale"):
        main(["speed"])


@pytest.mark.slow
def test_quick_bench_measures_both_sides_of_every_section(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["--quick", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    rows = {(r["section"], r["measure"]): r for r in record["rows"]}
    assert {s for s, _ in rows} == {"input", "train", "limit", "threads", "overhead",
                                    "efficiency", "scale"}
    for key in [("input", "images/s"), ("input", "CPU s/image"), ("train", "resnet18 images/s"),
                ("limit", "trainable / model alone, training images/s"),
                ("threads", "2 threads: images/s vs 1 thread"),
                ("overhead", "s per tiny trial in a search (W&B offline) vs plain"),
                ("scale", "trials per minute, 2 worker nodes vs 1"),
                ("efficiency", "epochs in the whole search")]:
        row = rows[key]
        assert row["ours"] > 0 and row["baseline"] > 0, row
        assert row["ratio"] == pytest.approx(
            row["ours"] / row["baseline"] if row["better"] == "higher"
            else row["baseline"] / row["ours"])
    assert rows[("input", "cache build s/image (once per node)")]["ours"] > 0
    assert rows[("overhead", "s to start a local Ray (once)")]["ours"] > 0
    assert rows[("scale", "trials per minute, 2 worker nodes vs 1")]["nodes_used"] == [2]
    assert "met" in rows[("limit", "trainable / model alone, training images/s")]
    env = record["environment"]
    assert env["python"] and env["cpus"] and env["git_commit"] and env["packages"]["torch"]
    assert record["params"]["image_size"] == 96 and record["params"]["quick"]
    printed = capsys.readouterr().out
    assert "x better" in printed and f"written to {out}" in printed


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


def test_efficiency_rows_compare_the_methods_at_a_target_every_run_reaches() -> None:
    def run(values: list[float]) -> dict:
        return {"values": values, "minutes": [i / 2 for i in range(1, len(values) + 1)]}

    runs = {"tpe-asha": [run([0.2, 0.6, 0.7]), run([0.5, 0.8, 0.4, 0.9]), run([0.7, 0.7, 0.7])],
            "random-fifo": [run([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]),
                            run([0.1, 0.7, 0.1, 0.1, 0.1, 0.1]),
                            run([0.0] * 8 + [0.75])]}
    rows = {r["measure"]: r for r in efficiency_rows(runs, "max", "val/kappa", None)}
    # the worst best: 0.7 (the first TPE run, the third, and the second random one)
    reach = rows["epochs until val/kappa >= 0.700"]
    assert reach["spread"] == [[3.0, 2.0, 1.0], [7.0, 2.0, 9.0]]
    assert (reach["ours"], reach["baseline"], reach["ratio"]) == (2.0, 7.0, 3.5)
    assert reach["met"] and reach["target"] == 3.0
    assert rows["minutes until then"]["ours"] == 1.0  # the median run's 2nd epoch
    at_equal = rows["best val/kappa at 3 epochs"]  # the shortest TPE + ASHA run's epochs
    assert at_equal["spread"] == [[0.7, 0.8, 0.7], [0.3, 0.7, 0.0]]
    assert (at_equal["ours"], at_equal["baseline"]) == (0.7, 0.3)
    assert rows["epochs in the whole search"]["baseline"] == 9  # of 9, 6 and 9
    never = efficiency_rows(runs, "max", "val/kappa", 0.95)[0]
    assert never["ours"] == never["baseline"] == float("inf")


def test_the_readme_table_comes_from_the_newest_full_record_of_each_section(tmp_path: Path) -> None:
    def record(name: str, finished: str, rows: list[dict], quick: bool = False,
               changed: list[str] | None = None) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps({"params": {"quick": quick}, "finished": finished, "rows": rows,
                                    "environment": {"git_commit": "abcdef0123",
                                                    "git_changed": changed}}))
        return path

    old = record("a.json", "2026-01-01", [row("input", "images/s", 100.0, 10.0, True)])
    new = record("b.json", "2026-02-01", [row("input", "images/s", 300.0, 10.0, True)])
    quick = record("c.json", "2026-03-01", [row("input", "images/s", 1.0, 1.0, True)], quick=True)
    scale = row("scale", "trials per minute, 2 worker nodes vs 1", 3.4, 2.0, True)
    scale.update(target=1.8, met=False)
    other = record("d.json", "2026-01-15", [scale], changed=["search/bench.py"])
    lines = readme_table([old, new, quick, other]).splitlines()
    assert lines[2] == "| input | images/s | 300 | 10 | 30 |  | `b.json` (abcdef0) |"
    assert lines[3] == ("| scale | trials per minute, 2 worker nodes vs 1 | 3.4 | 2 | 1.7 | "
                        ">= 1.8: MISSED | `d.json` (abcdef0 + changes) |")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench table: start -->\nold\n<!-- bench table: end -->\nrest\n")
    write_readme(readme, [new])
    text = readme.read_text()
    assert "old" not in text and "`b.json`" in text and text.endswith("end -->\nrest\n")
    readme.write_text("no markers")
    with pytest.raises(ConfigError, match="no <!-- bench table: start -->"):
        write_readme(readme, [new])
