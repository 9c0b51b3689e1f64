"""The task layer: metrics against numbers worked out by hand, losses against their definitions,
the grayscale path, and bagging and submissions in each task's format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from search.engine.bagging import bag_csvs
from trainables.errors import ConfigError
from trainables.tasks import GRADING, MULTILABEL, classes_task
from trainables.tasks.metrics import f1_thresholds, multilabel_metrics, per_label_table
from trainables.tasks.objectives import make_objective
from trainables.train.config import TrainConfig


def test_macro_auroc_counts_ordered_pairs_and_leaves_out_a_label_without_positives() -> None:
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=np.float32)
    probs = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.2], [0.4, 0.1, 0.3], [0.6, 0.3, 0.4]])
    # label 0: positives 0.9, 0.4 against negatives 0.3, 0.6 -> pairs won: (0.9>0.3, 0.9>0.6,
    # 0.4>0.3) = 3 of 4; label 1: positives 0.8, 0.1 against 0.2, 0.3 -> 2 of 4; label 2 has
    # no positive and is left out
    m = multilabel_metrics(labels, probs)
    assert m["auroc_macro"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    # AP of label 0: ranks 0.9 (pos), 0.6, 0.4 (pos) -> (1/1 + 2/3) / 2; label 1: 0.8 (pos),
    # 0.3, 0.2, 0.1 (pos) -> (1 + 2/4) / 2
    assert m["map"] == pytest.approx(((1 + 2 / 3) / 2 + (1 + 2 / 4) / 2) / 2)
    rows = per_label_table(labels, probs, ["a", "b", "c"], np.full(3, 0.5))
    assert rows[2]["auroc"] is None and rows[2]["positives"] == 0
    assert rows[0]["f1"] == pytest.approx(0.5)  # 0.9 hit, 0.4 missed, 0.6 a false alarm


def test_thresholds_are_chosen_for_f1_on_validation() -> None:
    labels = np.array([[1], [1], [0], [0], [1]], dtype=np.float32)
    probs = np.array([[0.35], [0.30], [0.20], [0.10], [0.9]])  # separable at any cut in (0.2, 0.3]
    cut = f1_thresholds(labels, probs)[0]
    assert 0.2 < cut <= 0.30
    assert MULTILABEL.decide(probs, np.array([cut]))[:, 0].tolist() == [1, 1, 0, 0, 1]


def test_single_label_metrics_and_decisions() -> None:
    labels = np.array([0, 1, 2, 2])
    probs = np.eye(3)[[0, 2, 2, 2]]  # one class-1 image called 2
    m = classes_task().scores(labels, probs)
    assert m["accuracy"] == 0.75
    # per-class recall 1, 0, 1 -> balanced 2/3; F1 per class 1, 0, 0.8 -> macro 0.6
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["f1_macro"] == pytest.approx(0.6)
    # quadratic weighted kappa by hand: observed (true, called) = (0,0), (1,2), (2,2), (2,2);
    # weights (i-j)^2/4; rows 1,1,2 and columns 1,0,3 of 4 -> expected cells r_i c_j / 4.
    # Observed disagreement 1/4 (the (1,2) cell); expected 0.75 (0,2) + 0.0625 (1,0) +
    # 0.1875 (1,2) + 0.5 (2,0) = 1.5 -> 1 - 0.25 / 1.5 = 5/6 (linear weights: 5/7; none: 5/9)
    assert GRADING.scores(labels, probs)["kappa"] == pytest.approx(5 / 6)


def test_bce_pos_weight_is_negatives_over_positives_and_focal_gamma_0_is_bce() -> None:
    labels = np.array([[1, 0], [0, 0], [0, 1], [0, 1]], dtype=np.float32)
    cfg = TrainConfig(task="multilabel", loss="bce", num_classes=2)
    objective = make_objective(cfg, labels, torch.device("cpu"))
    assert objective.weight is not None
    assert objective.weight.tolist() == [3.0, 1.0]  # 3 negatives / 1 positive; 2 / 2
    logits, targets = torch.tensor([[0.3, -1.0]]), torch.tensor([[1.0, 0.0]])
    # by hand: -3 * log(sigmoid(0.3)) and -log(1 - sigmoid(-1.0)), averaged
    by_hand = (-3 * math.log(1 / (1 + math.exp(-0.3))) - math.log(1 - 1 / (1 + math.exp(1.0)))) / 2
    assert objective.loss(logits, targets).item() == pytest.approx(by_hand, rel=1e-5)
    focal = make_objective(cfg.replace(loss="focal", focal_gamma=0.0), labels, torch.device("cpu"))
    plain = F.binary_cross_entropy_with_logits(logits, targets).item()
    assert focal.loss(logits, targets).item() == pytest.approx(plain, rel=1e-5)
    assert focal.probs(logits).tolist()[0] == pytest.approx([1 / (1 + math.exp(-0.3)),
                                                            1 / (1 + math.exp(1.0))])


def test_class_weights_are_inverse_frequencies() -> None:
    labels = np.array([0, 0, 0, 1])
    cfg = TrainConfig(task="classes", num_classes=3, class_weights=True)
    weight = make_objective(cfg, labels, torch.device("cpu")).weight
    assert weight is not None
    # n / (classes present * count): 4 / (2 * 3), 4 / (2 * 1); an absent class keeps 1
    assert weight.tolist() == pytest.approx([4 / 6, 2.0, 1.0])


def test_a_loss_that_does_not_fit_the_task_is_refused() -> None:
    with pytest.raises(ConfigError, match="loss='ce' does not fit task='multilabel'"):
        TrainConfig(task="multilabel", loss="ce")
    assert make_objective(TrainConfig(task="multilabel", num_classes=2), np.eye(2),
                          torch.device("cpu")).loss_name == "bce"  # auto
    with pytest.raises(ConfigError, match="loss='focal' does not fit task='classes'"):
        TrainConfig(task="classes", loss="focal")


def test_eval_loss_of_each_kind() -> None:
    assert classes_task().eval_loss(np.array([1]), np.array([[0.25, 0.75]])) == pytest.approx(
        -math.log(0.75))
    assert MULTILABEL.eval_loss(np.array([[1, 0]]), np.array([[0.8, 0.4]])) == pytest.approx(
        (-math.log(0.8) - math.log(0.6)) / 2)


def test_grayscale_images_are_cached_with_one_channel_and_fed_as_three(tmp_path: Path) -> None:
    from trainables.data.cache import build_cache
    from trainables.data.demo_sets import write_shapes_demo
    from trainables.data.formats import read_dataset
    from trainables.train.augment import BatchAugment

    root = write_shapes_demo(tmp_path / "shapes")
    index = read_dataset("medmnist", root)
    cached = build_cache(index, size=32, preprocess="none", root=tmp_path / "cache",
                         dataset="medmnist")
    assert cached.images["train"].shape[1:] == (32, 32, 1)
    batch = torch.from_numpy(np.array(cached.images["val"][:4]))
    x = BatchAugment("flip+tilt", (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), torch.device("cpu"))(
        batch, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 32, 32)
    # one gray value per pixel, normalised by each channel's ImageNet mean and std
    gray = x * torch.tensor([0.2, 0.2, 0.2]).view(1, 3, 1, 1) + torch.tensor(
        [0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-6)
    assert torch.allclose(gray[:, 1], gray[:, 2], atol=1e-6)


def test_submissions_in_each_tasks_format() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    grades = GRADING.submission(["a.jpg", "b.jpg"], probs, ["0", "1", "2"])
    assert list(grades.columns) == ["ID", "TARGET"] and grades["TARGET"].tolist() == [0, 2]
    classes = classes_task().submission(["a", "b"], probs, ["cat", "dog", "owl"],
                                        with_probs=True)
    assert list(classes.columns) == ["ID", "TARGET", "class", "p0", "p1", "p2"]
    assert classes["class"].tolist() == ["cat", "owl"]
    labels = MULTILABEL.submission(["1", "2"], probs, ["Disease_Risk", "DR", "ARMD"])
    assert list(labels.columns) == ["ID", "Disease_Risk", "DR", "ARMD"]
    assert labels["ARMD"].tolist() == [0.1, 0.6]


def test_search_bag_averages_multi_label_files_and_refuses_a_vote(tmp_path: Path) -> None:
    one = pd.DataFrame({"ID": [1, 2], "A": [0.2, 0.9], "B": [0.4, 0.0]})
    two = pd.DataFrame({"ID": [2, 1], "A": [0.5, 0.6], "B": [1.0, 0.2]})
    one.to_csv(tmp_path / "one.csv", index=False)
    two.to_csv(tmp_path / "two.csv", index=False)
    bagged = bag_csvs([tmp_path / "one.csv", tmp_path / "two.csv"])
    assert bagged["ID"].tolist() == [1, 2]
    assert bagged["A"].tolist() == pytest.approx([0.4, 0.7])  # matched by ID, not by row
    assert bagged["B"].tolist() == pytest.approx([0.3, 0.5])
    with pytest.raises(ConfigError, match="averaging"):
        bag_csvs([tmp_path / "one.csv", tmp_path / "two.csv"], "vote")
    two.rename(columns={"B": "C"}).to_csv(tmp_path / "three.csv", index=False)
    with pytest.raises(ConfigError, match="label columns differ"):
        bag_csvs([tmp_path / "one.csv", tmp_path / "three.csv"])


def test_a_grayscale_multi_label_npz_trains_under_the_multi_label_task(tmp_path: Path) -> None:
    from trainables.train.reporting import LocalReporter
    from trainables.train.trainable import fit

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 16), ("val", 8), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n * 3).reshape(n, 3) % 2).astype(np.uint8)
    np.savez(tmp_path / "chest.npz", **arrays)  # type: ignore[arg-type]
    values = {"data": str(tmp_path / "chest.npz"), "dataset": "medmnist_npz", "model": "resnet18",
              "weights": "none", "image_size": 32, "batch_size": 8, "epochs": 1,
              "preprocess": "none", "device": "cpu", "cache_dir": str(tmp_path / "cache")}
    reporter = LocalReporter(None)
    fit(TrainConfig.from_dict({**values, "task": "multilabel", "num_classes": 3}), reporter)
    assert reporter.metric == "val/auroc_macro" and 0 <= reporter.history[0]["val/auroc_macro"] <= 1
    with pytest.raises(ConfigError, match=r"holds multi-label data \(3 labels\), but the config's "
                                          r"task is classes.*--set dataset=medmnist_npz"):
        fit(TrainConfig.from_dict({**values, "task": "classes", "num_classes": 3}), reporter)


def test_the_final_step_refuses_a_vote_over_labels(tmp_path: Path) -> None:
    import json

    from search.final import run_final
    from search.run import parse_args, resolve
    from spaces import get_experiment

    spec = resolve(parse_args(["rfmid_multilabel", "--demo"]), get_experiment("rfmid_multilabel"))
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "rfmid_multilabel",
                                                      "settings": spec.to_dict()}))
    with pytest.raises(ConfigError, match="--method vote is for single-label tasks"):
        run_final(tmp_path, method="vote")


def test_best_by_mode_by_hand() -> None:
    from trainables.tasks import best, best_by, best_of_rows, best_so_far, better, direction, sign

    assert better(0.6, 0.5, "max") and not better(0.5, 0.5, "max") and better(0.4, 0.5, "min")
    assert best([0.3, 0.7, 0.5], "max") == 0.7 and best([0.3, 0.7, 0.5], "min") == 0.3
    rows = [{"e": 1, "loss": 0.9}, {"e": 2, "loss": 0.4}, {"e": 3, "loss": 0.4}]
    assert best_by(rows, "min", key=lambda r: r["loss"])["e"] == 2  # the first of equals
    assert best_by(rows, "max", key=lambda r: r["loss"])["e"] == 1
    assert (sign("max"), sign("min")) == (1.0, -1.0)
    assert (direction("max"), direction("min")) == ("maximize", "minimize")
    nan = float("nan")
    so_far = best_so_far([nan, 0.5, 0.3, nan, 0.8], "max")
    assert so_far[0] != so_far[0] and so_far[1:] == [0.5, 0.5, 0.5, 0.8]
    assert best_so_far([0.5, 0.3, 0.4], "min") == [0.5, 0.3, 0.3]
    table = np.array([[0.2, 0.9, 0.5], [0.7, 0.1, 0.3]])
    assert best_of_rows(table, "max").tolist() == [0.9, 0.7]
    assert best_of_rows(table, "min").tolist() == [0.2, 0.1]


def test_trials_rank_full_length_first_then_stopped_each_best_first_by_hand() -> None:
    """The run folder's ranking (best/top_k.json, the final step's members) on distinct values:
    full-length trials before those ASHA stopped, each group by its value in the mode's
    direction; failed trials and trials without a value are not ranked."""
    from search.engine.run_folder import rank_trials

    trials = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e", "f", "g"],
        "status": ["completed", "stopped early", "completed", "failed", "stopped early",
                   "completed", "completed"],
        "val/kappa": [0.61, 0.93, 0.72, 0.99, 0.40, float("nan"), 0.55],
    })
    assert rank_trials(trials, "val/kappa", "max")["trial_id"].tolist() == [
        "c", "a", "g", "b", "e"]  # 0.93 was stopped early: after every full-length trial
    assert rank_trials(trials, "val/kappa", "min")["trial_id"].tolist() == [
        "g", "a", "c", "e", "b"]
    assert rank_trials(trials, "val/loss", "min").empty  # a metric the trials lack


def test_a_trial_ranks_its_epochs_by_its_experiments_metric() -> None:
    """medmnist optimises val/accuracy: its trial config says so, and the trial's reporter (its
    best checkpoint, its kept weights) goes by it, not by the classes task's usual macro F1."""
    from spaces import get_experiment
    from trainables.errors import ConfigError
    from trainables.tasks import task_of
    from trainables.train.config import TrainConfig
    from trainables.train.reporting import LocalReporter

    cfg = get_experiment("medmnist").config(demo=True)
    assert (cfg.task, cfg.metric) == ("classes", "val/accuracy")
    reporter = LocalReporter(None)
    reporter.start(cfg.to_dict())
    assert (reporter.metric, reporter.mode) == ("val/accuracy", "max")
    assert task_of("classes").metric == "val/f1_macro"  # a record that names only the kind
    older = {k: v for k, v in cfg.to_dict().items() if k != "metric"}  # an older config
    assert TrainConfig.from_dict(older).metric == ""
    with pytest.raises(ConfigError, match="metric='val/kappa': choose one of val/accuracy"):
        cfg.replace(metric="val/kappa")
    with pytest.raises(ConfigError, match=r"medmnist: metric is the experiment's own \(metric="
                                          r"val/accuracy\)"):
        get_experiment("medmnist").config(demo=True, overrides={"metric": "val/f1_macro"})


def test_a_new_task_kind_is_one_registered_class() -> None:
    """A kind registered the way the three are is known to configs, metrics and submissions,
    with nothing else changed (the kind here: two-class screening, scored by accuracy)."""
    from trainables.tasks import REGISTRY, register_task, task_of
    from trainables.tasks.metrics import class_metrics
    from trainables.tasks.single import SingleLabel

    @register_task
    class Screening(SingleLabel):
        kind = "screening"
        columns = (("accuracy", "accuracy"),)
        usual = "val/accuracy"

        def scores(self, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
            return {"accuracy": class_metrics(labels, probs)["accuracy"]}

    try:
        task = task_of("screening")
        assert isinstance(task, Screening) and task.metric == "val/accuracy"
        cfg = TrainConfig(task="screening", num_classes=2)
        assert cfg.task == "screening"
        probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
        assert task.value(np.array([0, 1, 1]), probs) == pytest.approx(2 / 3)
        assert task.submission(["a", "b", "c"], probs, ["no", "yes"])["TARGET"].tolist() == [0, 1, 0]
        with pytest.raises(ConfigError, match="loss='bce' does not fit task='screening'"):
            TrainConfig(task="screening", loss="bce")
    finally:
        del REGISTRY["screening"]
    with pytest.raises(ConfigError, match="task='screening'"):
        TrainConfig(task="screening")


def test_no_module_outside_the_task_package_asks_which_kind_a_task_is() -> None:
    """The kinds' differences live in trainables/tasks/ alone: elsewhere a task is asked, never
    compared with a kind's name."""
    import re

    root = Path(__file__).resolve().parents[1]
    kinds = "|".join(("grading", "classes", "multilabel"))
    asked = re.compile(rf"""(==|!=|\bin)\s*\(?["']({kinds})["']|["']({kinds})["']\s*(==|!=)|"""
                       r"\.multilabel\b|task\.kind\s*[!=]=")
    found = [f"{path.relative_to(root)}:{n}" for folder in ("search", "trainables", "spaces")
             for path in sorted((root / folder).rglob("*.py"))
             if "tasks" not in path.relative_to(root).parts
             for n, line in enumerate(path.read_text().splitlines(), 1) if asked.search(line)]
    assert found == []
