"""The class-folder, MedMNIST and multi-label experiments end to end through the README's
commands, each run by its own `main` in this process on one local Ray (slow): a smoke run of
each, and runs of `medmnist --demo` and `rfmid_multilabel --demo` that learn clearly, end with
a submission and a report, and reproduce their best trial."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from sklearn.metrics import roc_auc_score

from tests.helpers import ONE_AT_A_TIME
from trainables.data.demo_sets import FINDINGS


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """The machine's local Ray, which each command below joins as `search.run` joins a running
    one (2 CPUs, as `search.run` starts here)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def cli(module: str, *args: str) -> str:
    """`python -m MODULE ARGS`, run by its own `main` in this process (on the module's Ray, with
    this process's imports: each command costs its work, not a fresh interpreter and Ray);
    what it printed. It must end with code 0. The README's commands in fresh processes:
    tests/test_search_e2e.py, and the error path below."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = importlib.import_module(module).main(list(args))
    assert code == 0, printed.getvalue()[-3000:]
    return printed.getvalue()


def final_metrics(run: Path) -> dict:
    return json.loads((run / "final" / "metrics.json").read_text())


def check_gain_against_files(run: Path, labels: dict[str, pd.DataFrame], columns: list[str],
                             score: Callable[[np.ndarray, np.ndarray], float]) -> dict:
    """The final step's defaults-against-search numbers, recomputed from the files: each
    default's predictions (final/defaults/), each member's test predictions (submission/) and
    its validation score in metrics.json, the bag's there; `labels[split]` holds ID and the
    true label column(s) from the dataset's own files, `columns` the probability columns."""
    metrics = final_metrics(run)
    gain = metrics["gain"]
    assert set(gain) >= {"val", "test"}, "both splits are labelled"

    def scored(path: Path, split: str) -> float:
        truth = labels[split].set_index("ID").add_prefix("true:")
        frame = pd.read_csv(path).merge(truth, left_on="ID", right_index=True)
        assert len(frame) == len(truth), path  # every image, matched by ID
        return score(frame[truth.columns].to_numpy().squeeze(), frame[columns].to_numpy())

    seeds, key = gain["defaults"]["seeds"], metrics["metric"].split("/", 1)[1]
    for split in ("val", "test"):
        defaults = [scored(run / "final" / "defaults" / f"seed_{s}_{split}.csv", split)
                    for s in seeds]
        assert gain[split]["defaults"]["values"] == pytest.approx(defaults)
        assert gain[split]["defaults"]["mean"] == pytest.approx(np.mean(defaults))
        assert gain[split]["bag"]["value"] == pytest.approx(metrics["bag"][split][key])
        for name in ("members", "best_member", "bag"):
            r = gain[split][name]
            assert r["gain"] == pytest.approx(r["value"] - np.mean(defaults))
            assert r["low"] <= r["high"]
    val = {m["member"]: m["val"][key] for m in metrics["members"]}
    best = gain["val"]["best_member"]["member"]
    assert val[best] == max(val.values())  # best on validation
    assert gain["val"]["best_member"]["value"] == pytest.approx(val[best])
    assert gain["val"]["members"]["value"] == pytest.approx(np.mean(list(val.values())))
    test = {n: scored(run / "submission" / f"member_{n}.csv", "test") for n in val}
    assert gain["test"]["best_member"]["value"] == pytest.approx(test[best])
    assert gain["test"]["members"]["value"] == pytest.approx(np.mean(list(test.values())))
    html = (run / "report" / "index.html").read_text()
    assert html.index("What the search bought") < html.index("<h2>Run</h2>")
    return gain


@pytest.mark.slow
def test_imagefolder_on_a_raw_tree_draws_keeps_and_reuses_its_split(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    cli("search.data", "demo", "imagefolder", "--out", str(tree))
    cli("search.run", "imagefolder", "--data", str(tree), "--smoke-test", "--no-wandb",
        "--no-baseline", *ONE_AT_A_TIME,
        "--set", "weights=none", "--set", "model=resnet18", "--results", str(tmp_path),
        "--name", "smoke")
    run = tmp_path / "imagefolder" / "smoke"
    split = pd.read_csv(run / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"} and len(split) == 720
    submission = pd.read_csv(run / "submission" / "test_predictions.csv")
    assert list(submission.columns) == ["ID", "TARGET", "class"]
    assert len(submission) == (split["split"] == "test").sum()
    assert final_metrics(run)["task"] == "classes"
    assert "Confusion matrix" in (run / "report" / "index.html").read_text()
    cli("search.reproduce", str(run / "best" / "config.json"))
    # the data changed since the search: one image more moves the drawn split
    extra = next((tree / "round_striped").glob("*.jpeg"))
    (tree / "round_striped" / "extra.jpeg").write_bytes(extra.read_bytes())
    changed = subprocess.run([sys.executable, "-m", "search.reproduce",
                              str(run / "best" / "config.json")], capture_output=True, text=True,
                             timeout=600)
    assert changed.returncode != 0 and "the data changed since the search" in changed.stderr
    assert "Traceback" not in changed.stderr


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["medmnist", "rfmid_multilabel"])
def test_the_demo_smoke_test(experiment: str, tmp_path: Path) -> None:
    # the final step and the report: in the runs below that learn
    result = cli("search.run", experiment, "--demo", "--smoke-test", "--no-wandb", "--no-final",
                 *ONE_AT_A_TIME, "--results", str(tmp_path), "--name", "smoke")
    assert f"{experiment}: 2 trials of up to 1 epochs" in result
    assert (tmp_path / experiment / "smoke" / "best" / "config.json").is_file()


@pytest.mark.slow
def test_medmnist_demo_learns_the_six_classes_and_reproduces(tmp_path: Path) -> None:
    cli("search.run", "medmnist", "--demo", "--num-samples", "2", "--max-epochs", "4",
        "--top-k", "2", "--no-baseline", *ONE_AT_A_TIME,
        "--results", str(tmp_path), "--name", "demo")
    run = tmp_path / "medmnist" / "demo"
    metrics = final_metrics(run)
    assert metrics["bag"]["val"]["accuracy"] > 0.6  # chance is 1/6
    assert metrics["bag"]["test"]["accuracy"] > 0.6  # the test folder's labels
    submission = pd.read_csv(run / "submission" / "test_predictions.csv")
    assert submission["TARGET"].nunique() >= 4  # not one class for every image
    html = (run / "report" / "index.html").read_text()
    assert "Confusion matrix" in html and "Per-class table" in html
    assert (run / "report" / "curves.png").is_file()
    reproduced = cli("search.reproduce", str(run / "best" / "config.json"))
    assert "OK" in reproduced


def macro_auroc(truth: np.ndarray, probs: np.ndarray) -> float:
    """Over the labels with a positive and a negative, as the task scores it."""
    keep = [j for j in range(truth.shape[1]) if 0 < truth[:, j].sum() < len(truth)]
    return float(roc_auc_score(truth[:, keep], probs[:, keep], average="macro"))


@pytest.mark.slow
def test_rfmid_demo_learns_each_finding(tmp_path: Path) -> None:
    cli("search.run", "rfmid_multilabel", "--demo", "--num-samples", "2", "--max-epochs", "3",
        "--top-k", "2", *ONE_AT_A_TIME,
        "--set", "image_size=96",  # the demo's 128 px learns it too, slower
        "--results", str(tmp_path), "--name", "demo")
    run = tmp_path / "rfmid_multilabel" / "demo"
    metrics = final_metrics(run)
    assert metrics["bag"]["val"]["auroc_macro"] > 0.75
    per_label = {row["label"]: row for row in metrics["per_label"]}
    assert list(per_label) == ["Disease_Risk", *FINDINGS]
    assert all(per_label[name]["auroc"] > 0.6 for name in FINDINGS)  # each one, not an average
    submission = pd.read_csv(run / "submission" / "test_predictions.csv")
    assert list(submission.columns) == ["ID", "Disease_Risk", *FINDINGS]
    assert submission["ID"].tolist()[:3] == [1, 2, 3]  # RFMiD's own IDs, in its order
    html = (run / "report" / "index.html").read_text()
    assert "Per-label table" in html and "roc.png" in html
    assert list((run / "report" / "gradcam").glob("val_*_cam*.png"))
    # the defaults trained beside the members, scored from the files against RFMiD's own CSVs
    data = Path(json.loads((run / "config.json").read_text())["settings"]["fixed"]["data"])
    columns = ["Disease_Risk", *FINDINGS]
    labels = {split: pd.read_csv(next(data.glob(f"*/RFMiD_{name}_Labels.csv")))
              for split, name in (("val", "Validation"), ("test", "Testing"))}
    gain = check_gain_against_files(run, labels, columns, macro_auroc)
    assert gain["unit"] == "images" and gain["val"]["units"] == len(labels["val"])
    assert gain["defaults"]["config"]["loss"] == "bce"  # the experiment's own, not searched
    reproduced = cli("search.reproduce", str(run / "best" / "config.json"))
    assert "OK" in reproduced
