"""The staged, two-stage and ensemble experiments end to end through the README's commands,
each run by its own `main` in this process on one local Ray (slow): a smoke run of each, and
a demo run of each that learns clearly, ends with a submission and a report, and reproduces
its best trial."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from tests.helpers import ONE_AT_A_TIME
from tests.test_experiments_e2e import (  # noqa: F401 (local_ray: the module's Ray)
    check_gain_against_files,
    cli,
    final_metrics,
    local_ray,
)

SEARCH = ("--no-wandb", *ONE_AT_A_TIME)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["chestxray_staged", "idrid_two_phase",
                                        "deepdrid_two_stage", "deepdrid_ensemble"])
def test_the_demo_smoke_test(experiment: str, tmp_path: Path) -> None:
    result = cli("search.run", experiment, "--demo", "--smoke-test", "--no-final", *SEARCH,
                 "--results", str(tmp_path), "--name", "smoke")
    phases = 2 if experiment in ("chestxray_staged", "idrid_two_phase") else 1
    assert f"{experiment}: 2 trials of up to {phases} epochs" in result  # 1 a phase
    epochs = pd.read_parquet(tmp_path / experiment / "smoke" / "epochs.parquet")
    assert len(epochs) == 2 * phases
    if phases == 2:
        assert sorted(epochs["phase"].unique()) == [1, 2]


def reproduces(run: Path) -> None:
    assert "OK" in cli("search.reproduce", str(run / "best" / "config.json"))


@pytest.mark.slow
def test_chestxray_staged_learns_in_its_second_phase_and_reproduces(tmp_path: Path) -> None:
    cli("search.run", "chestxray_staged", "--demo", "--num-samples", "2", "--top-k", "2",
        "--no-baseline", *SEARCH, "--results", str(tmp_path), "--name", "demo")
    run = tmp_path / "chestxray_staged" / "demo"
    metrics = final_metrics(run)
    assert metrics["bag"]["val"]["f1_macro"] > 0.7  # chance: 1/3
    assert metrics["bag"]["test"]["f1_macro"] > 0.7  # the drawn test split
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert set(epochs["phase"]) == {1, 2}
    top = json.loads((run / "best" / "config.json").read_text())
    assert top["config"]["phases"][0]["unfreeze_depth"] == 0  # a: the frozen backbone
    assert (run / "report" / "curves.png").is_file()
    submission = pd.read_csv(run / "submission" / "test_predictions.csv")
    assert set(submission["class"]) == {"NORMAL", "PNEUMONIA", "TUBERCULOSIS"}
    reproduces(run)  # both phases replayed, the hand-over included


@pytest.mark.slow
def test_idrid_two_phase_keeps_its_best_epoch_and_reproduces(tmp_path: Path) -> None:
    cli("search.run", "idrid_two_phase", "--demo", "--num-samples", "3", "--top-k", "2",
        "--set", "image_size=96", *SEARCH, "--results", str(tmp_path), "--name", "demo")
    run = tmp_path / "idrid_two_phase" / "demo"
    metrics = final_metrics(run)
    assert metrics["bag"]["val"]["kappa"] > 0.6 and "accuracy" in metrics["bag"]["val"]
    trials = pd.read_parquet(run / "trials.parquet")
    assert trials["phase_1_epochs"].notna().all()  # searched, per trial
    # the defaults trained beside the members, scored from the files against the labels of
    # the split medtune drew (split.csv) and of IDRiD's test CSV
    split = pd.read_csv(run / "split.csv").assign(ID=lambda f: f["image"].map(
        lambda p: Path(p).name))
    labels = {s: split[split["split"] == s][["ID", "label"]] for s in ("val", "test")}
    columns = [f"p{c}" for c in range(5)]
    gain = check_gain_against_files(run, labels, columns, lambda y, p: cohen_kappa_score(
        y, p.argmax(axis=1), weights="quadratic"))
    # the experiment's own phases (spaces/idrid_two_phase.py's demo), not a searched one
    phases = {p["name"]: p for p in json.loads((run / "config.json").read_text())[
        "settings"]["fixed"]["phases"]}
    assert gain["defaults"]["config"]["phase_1_epochs"] == phases["1"]["epochs"]
    reproduces(run)


@pytest.mark.slow
def test_deepdrid_two_stage_trains_stage_1_once_and_reports_it_beside_the_baseline(
        tmp_path: Path) -> None:
    result = cli("search.run", "deepdrid_two_stage", "--demo", "--num-samples", "2",
                 "--max-epochs", "2", "--top-k", "2", "--max-concurrent", "2",  # W&B offline
                 "--no-baseline",
                 "--set", "stage1_epochs=1", "--set", "image_size=96", "--results",
                 str(tmp_path), "--name", "demo")
    assert "W&B: final run logged offline" in result
    run = tmp_path / "deepdrid_two_stage" / "demo"
    stored = list((run / "stage1").glob("*/stage1.json"))
    assert len(stored) == 1  # two trials, two members, the reproduction: one stage 1
    two = final_metrics(run)["two_stage"]
    assert two["stage1"]["value"] > 0.6  # stage 1 learnt the APTOS-format demo
    assert {"val"} <= set(two["baseline"]) and {"val"} <= set(two["stage2_member_1"])
    assert final_metrics(run)["bag"]["val"]["kappa"] > 0.6
    assert "Two-stage transfer" in (run / "report" / "index.html").read_text()
    reproduces(run)
    assert len(list((run / "stage1").glob("*/stage1.json"))) == 1


@pytest.mark.slow
def test_deepdrid_ensemble_bags_architectures_by_greedy_selection(tmp_path: Path) -> None:
    # on two objectives, as the README runs it: QWK and each architecture's latency
    cli("search.run", "deepdrid_ensemble", "--demo", "--num-samples", "4", "--max-epochs", "2",
        "--top-k", "2", "--no-baseline", "--objectives", "val/kappa,latency", *SEARCH,
        "--results", str(tmp_path), "--name", "demo")
    run = tmp_path / "deepdrid_ensemble" / "demo"
    front = json.loads((run / "best" / "pareto.json").read_text())
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert front and (epochs["model/latency_ms"] > 0).all()
    values = [(r["objectives"]["val/kappa"], r["objectives"]["latency"]) for r in front]
    assert [v for v, _ in values] == sorted((v for v, _ in values), reverse=True)
    assert [lat for _, lat in values] == sorted((lat for _, lat in values), reverse=True)  # a
    # front, best QWK first: each next one is faster
    metrics = final_metrics(run)
    models = {m["model"] for m in metrics["members"]}
    assert len(models) >= 2 and metrics["select"] == "greedy"
    # greedy selection starts from the best member alone and keeps its best round: on the
    # validation set it chose on, the bag scores at least as well as its best member
    assert metrics["bag"]["val"]["kappa"] >= max(m["val"]["kappa"] for m in metrics["members"])
    assert metrics["bag"]["val"]["kappa"] > 0.6 and "val" in metrics["top_k_bag"]
    # and where it was not chosen: each half of validation by the other half's greedy weights,
    # beside the top-k bag on the same images (the top-k bag chose nothing: the same score)
    fair = metrics["cross_fitted"]
    assert fair["top_k"]["value"] == pytest.approx(metrics["top_k_bag"]["val"]["kappa"])
    assert sum(fair["halves"]) == len(np.load(run / "final" / "val_bag_probs.npy"))
    assert len(fair["weights"]) == 2 and all(sum(w) > 0 for w in fair["weights"])
    low, high = fair["greedy_over_top_k"]["low"], fair["greedy_over_top_k"]["high"]
    assert low <= fair["greedy"]["value"] - fair["top_k"]["value"] <= high
    html = (run / "report" / "index.html").read_text()
    assert "Ensemble selection: greedy against top-k" in html and "Pareto front" in html
    assert "the greedy bag where it was not chosen (cross-fitted)" in html
    # search.bag takes the members' CSVs across architectures: their mean is the plain bag
    csvs = [run / "submission" / f"member_{m['member']}.csv" for m in metrics["members"]]
    cli("search.bag", *map(str, csvs), "--out", str(tmp_path / "bag.csv"))
    bagged = pd.read_csv(tmp_path / "bag.csv")
    probs = sum(pd.read_csv(c)[["p0", "p1", "p2", "p3", "p4"]].to_numpy() for c in csvs)
    assert (bagged["TARGET"] == probs.argmax(axis=1)).all()
    reproduces(run)
