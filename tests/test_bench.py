"""`python -m search.bench`: ratios of side-by-side runs, a table and a JSON record. The tests
check the plumbing and the arithmetic, never a speed (DESIGN.md: no timed tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search.bench import _row, main, table
from trainables.errors import ConfigError


def test_a_ratio_reads_times_better_for_medtune_whichever_way_is_better() -> None:
    faster = _row("input", "images/s", 300.0, 100.0, higher_is_better=True)
    leaner = _row("input", "CPU s/image", 0.01, 0.04, higher_is_better=False)
    slower = _row("train", "images/s", 50.0, 100.0, higher_is_better=True)
    assert (faster["ratio"], leaner["ratio"], slower["ratio"]) == (3.0, 4.0, 0.5)
    assert "3" in table([faster]).splitlines()[1]


def test_an_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown section speed; known: input, train, overhead"):
        main(["speed"])


@pytest.mark.slow
def test_quick_bench_measures_both_sides_of_every_section(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["--quick", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    rows = {(r["section"], r["measure"]): r for r in record["rows"]}
    assert {s for s, _ in rows} == {"input", "train", "overhead"}
    for key in [("input", "images/s"), ("input", "CPU s/image"), ("train", "resnet18 images/s"),
                ("overhead", "s per tiny trial (in Ray Tune vs plain)")]:
        row = rows[key]
        assert row["ours"] > 0 and row["baseline"] > 0, row
        assert row["ratio"] == pytest.approx(
            row["ours"] / row["baseline"] if row["better"] == "higher"
            else row["baseline"] / row["ours"])
    assert rows[("input", "cache build s/image (once per node)")]["ours"] > 0
    assert rows[("overhead", "s to start a local Ray (once per search)")]["ours"] > 0
    assert record["environment"]["python"] and record["params"]["image_size"] == 96
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
