"""The search on a real local Ray with real Optuna: space, run folder, failures, resources."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import ray
import torch

from search.engine.driver import (
    ClusterShape,
    NodeShape,
    autoscaler_node_types,
    check_resources,
    default_concurrency,
)
from search.engine.searcher import FixedSpace, make_sampler
from search.run import main as run_main
from spaces import EXPERIMENTS
from spaces.deepdrid_attention import space as attention_space
from tests.helpers import ONE_AT_A_TIME, logged_results, study_agrees_with_run_folder
from trainables.errors import ConfigError

TINY = ["--set", "model=resnet18", "--set", "weights=none", "--set", "image_size=64",
        "--set", "max_train_batches=2", "--set", "max_eval_batches=2", "--set", "device=cpu",
        "--no-wandb"]
CONDITIONAL = ("heads", "layer_norm", "residual")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def sample(space: object, seed: int, n: int = 25) -> list[dict]:
    study = optuna.create_study(direction="maximize", sampler=make_sampler(seed, 5))
    for i in range(n):
        trial = study.ask()
        space(trial)  # type: ignore[operator]
        study.tell(trial, float(i % 7) / 7)
    return [t.params for t in study.trials]


def test_attention_space_is_conditional_under_a_seeded_sampler() -> None:
    params = sample(attention_space, seed=3)
    assert {p["attention"] for p in params} == {True, False}
    for p in params:
        assert {"lr", "augment", "unfreeze_depth", "attention"} <= set(p)
        for key in CONDITIONAL:
            assert (key in p) == p["attention"], p
        assert 1e-4 <= p["lr"] <= 3e-3
    assert sample(attention_space, seed=3) == params  # seeded: the same suggestions again
    assert sample(attention_space, seed=4) != params


def test_fixed_keys_are_not_asked_and_conditions_follow_them() -> None:
    params = sample(FixedSpace(attention_space, {"attention": False, "lr": 0.01}), seed=0, n=8)
    assert all(set(p) == {"augment", "unfreeze_depth"} for p in params)


def test_every_space_names_only_config_keys_it_declares() -> None:
    for experiment in EXPERIMENTS.values():
        assert experiment.space is not None
        for p in sample(experiment.space, seed=0, n=8):
            assert set(p) <= set(experiment.searched), experiment.name


def test_gpu_requests_are_checked_per_node(local_ray: None) -> None:
    cluster = ClusterShape.of_cluster()
    assert cluster.autoscaler is None  # a plain local Ray: its monitor does not autoscale
    assert [(s.cpus, s.gpus) for s in cluster.live] == [(2.0, 1.0)]  # a logical GPU
    check_resources(1, 1)
    check_resources(1, 0.5)
    with pytest.raises(ConfigError, match="asks for 1 CPU and 2 GPU on one node, but no node "
                                          r"can hold that: the live nodes are node \w+ \(2 CPU, 1 GPU\)"):
        check_resources(1, 2)
    with pytest.raises(ConfigError, match="asks for 3 CPU and 0 GPU"):
        check_resources(3, 0)
    assert default_concurrency(1, 0.5) == 2  # two half-GPU trials share the GPU
    assert default_concurrency(1, 1) == 1
    assert default_concurrency(1, 0) == 2


def test_a_request_must_fit_one_node_not_the_cluster_total() -> None:
    two = ClusterShape([NodeShape("node a", 1, 1), NodeShape("node b", 1, 1)], [])
    with pytest.raises(ConfigError, match=r"no node can hold that: the live nodes are node a "
                                          r"\(1 CPU, 1 GPU\), node b \(1 CPU, 1 GPU\); no autoscaler"):
        check_resources(1, 2, two)  # two GPUs in the cluster, but never on one node
    check_resources(1, 1, two)
    assert default_concurrency(1, 1, two) == 2
    assert default_concurrency(1, 0.5, two) == 2  # one CPU per node holds one trial


def test_gpu_yaml_accepts_the_readmes_request_before_any_gpu_worker_exists() -> None:
    """cluster/gpu.yaml starts with its CPU head alone: the README's --gpus-per-trial 0.5 must
    pass (the autoscaler starts GPU workers for it), 2 GPUs per trial must not (g5.xlarge has 1)."""
    types = autoscaler_node_types(Path(__file__).parents[1] / "cluster" / "gpu.yaml")
    assert {str(t) for t in types} == {"node type head (8 CPU, 0 GPU)",
                                       "node type gpu_worker x2 (4 CPU, 1 GPU)",
                                       "node type gpu_spot x2 (4 CPU, 1 GPU)"}
    head_only = ClusterShape([NodeShape("node head", 8, 0)], types, "cluster/gpu.yaml")
    check_resources(1, 0.5, head_only)
    assert default_concurrency(1, 0.5, head_only) == 8  # 4 workers, 2 trials each
    assert default_concurrency(1, 0, head_only) == 24  # CPU trials: the head's 8, 4 on each worker
    with pytest.raises(ConfigError, match=r"node type gpu_worker x2 \(4 CPU, 1 GPU\)"):
        check_resources(1, 2, head_only)


def test_a_named_autoscaler_config_is_read_or_refused(local_ray: None, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDTUNE_AUTOSCALER_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"MEDTUNE_AUTOSCALER_CONFIG=.*nope.yaml: no such file"):
        ClusterShape.of_cluster()
    gpu_yaml = Path(__file__).parents[1] / "cluster" / "gpu.yaml"
    monkeypatch.setenv("MEDTUNE_AUTOSCALER_CONFIG", str(gpu_yaml))
    cluster = ClusterShape.of_cluster()  # named: trusted even where no autoscaler reports
    assert cluster.autoscaler == str(gpu_yaml) and len(cluster.types) == 3
    check_resources(1, 0.5, cluster)
    (tmp_path / "broken.yaml").write_text("provider: {type: aws}\n")
    monkeypatch.setenv("MEDTUNE_AUTOSCALER_CONFIG", str(tmp_path / "broken.yaml"))
    with pytest.raises(ConfigError, match="cannot read its available_node_types"):
        ClusterShape.of_cluster()


def test_an_autoscaler_whose_node_types_are_unknown_is_given_the_benefit_of_the_doubt(
        caplog: pytest.LogCaptureFixture) -> None:
    unknown = ClusterShape([NodeShape("node head", 4, 0)],
                           [NodeShape("the autoscaler's node types", None, None)], "unknown")
    check_resources(1, 1, unknown)  # accepted, with a warning; --placement-timeout still guards
    assert "cannot check that one holds 1 CPU + 1 GPU" in caplog.text


def test_cli_refuses_an_impossible_gpu_request_at_once(local_ray: None, course_demo: Path,
                                                       tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="asks for 1 CPU and 4 GPU on one node"):
        run_main(["deepdrid_finetune", "--data", str(course_demo), "--results", str(tmp_path),
                  "--name", "g4", "--gpus-per-trial", "4", *TINY])
    assert not (tmp_path / "deepdrid_finetune" / "g4").exists()  # the name stays free


SMALL_RUN_WINDOW: list[float] = []  # wall clock before and after the small search


@pytest.fixture(scope="module")
def small_run(local_ray: None, course_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real search of 4 tiny trials (half a logical GPU each), run once for this module."""
    results = tmp_path_factory.mktemp("results")
    SMALL_RUN_WINDOW.append(time.time())
    code = run_main(["deepdrid_attention", "--data", str(course_demo), "--results", str(results),
                     "--name", "r1", "--num-samples", "4", "--max-epochs", "2",
                     "--gpus-per-trial", "0.5", "--no-final", *TINY])
    SMALL_RUN_WINDOW.append(time.time())
    assert code == 0
    return results / "deepdrid_attention" / "r1"


def test_a_small_search_writes_the_whole_run_folder(small_run: Path, course_demo: Path) -> None:
    run = small_run
    for name in ("config.json", "environment.json", "study.db", "trials.parquet",
                 "epochs.parquet", "best/config.json", "best/top_k.json"):
        assert (run / name).is_file(), name
    assert (run / "tune").is_dir()
    # every trial has ended: none keeps a checkpoint (the final step retrains from the config)
    assert len(list((run / "tune").glob("trial_*"))) == 4
    assert list((run / "tune").glob("trial_*/checkpoint_*")) == []
    env = json.loads((run / "environment.json").read_text())
    assert env["packages"]["ray"] == ray.__version__
    trials = pd.read_parquet(run / "trials.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert {"trial_id", "attention", "heads", "layer_norm", "residual", "lr", "augment",
            "unfreeze_depth", "status", "val/kappa", "best_epoch", "epochs", "seconds",
            "started", "finished", "error", "node_type", "gpu_hours", "cpu_hours"} <= set(trials)
    # the cost ledger: half a GPU and one CPU held for each epoch's time (Ray's own per-epoch
    # times, summed here); a local Ray's node carries no node-type label
    epoch_seconds = pd.read_parquet(run / "epochs.parquet").groupby("trial_id")[
        "time_this_iter_s"].sum()
    held = trials.set_index("trial_id")
    np.testing.assert_allclose(held["gpu_hours"] * 3600 / 0.5, epoch_seconds[held.index],
                               atol=0.01)  # trials.parquet's seconds: to the hundredth
    np.testing.assert_allclose(held["cpu_hours"], 2 * held["gpu_hours"])
    assert (held["gpu_hours"] > 0).all() and set(held["node_type"]) == {"unlabelled"}
    # times against the test's own clock (Ray's timestamps are whole seconds) and each trial's
    # epochs: a trial starts after the search began, before its first epoch ends, and finishes
    # with its last epoch, before the search returned
    began, ended = SMALL_RUN_WINDOW
    by_trial = pd.read_parquet(run / "epochs.parquet").groupby("trial_id")["timestamp"]
    for row in trials.itertuples():
        assert began - 1 <= row.started <= by_trial.min()[row.trial_id] <= row.finished
        assert row.finished == by_trial.max()[row.trial_id] and row.finished <= ended + 1
        # Ray stamps a result in whole seconds, apart from the clock its times come from: two
        # epochs 1.3 s apart have been stamped the same second
        assert row.seconds <= row.finished - row.started + 2
    # two at a time: the last trial to start began after the first one to finish had ended
    assert trials["started"].max() >= trials["finished"].min() - 1
    assert set(trials["status"]) <= {"completed", "stopped early"}
    assert str(trials["heads"].dtype) == "Int64"  # whole numbers, empty with attention off
    for row in trials.itertuples():  # conditional values exist only with attention on
        assert pd.isna(row.heads) == (not row.attention)
        assert pd.isna(row.residual) == (not row.attention)
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert len(epochs) == trials["epochs"].sum()
    # against Ray's raw logs: an uninterrupted run logged each epoch once, 1..n, with the
    # values the table holds
    logged = logged_results(run)
    assert sorted(logged) == sorted(trials["trial_id"])
    for trial, results in logged.items():
        table = epochs[epochs["trial_id"] == trial].sort_values("epoch")
        assert [r["epoch"] for r in results] == list(range(1, len(results) + 1))
        assert table["epoch"].tolist() == [r["epoch"] for r in results]
        assert table["val/kappa"].tolist() == pytest.approx([r["val/kappa"] for r in results])
    top = json.loads((run / "best" / "top_k.json").read_text())
    best = json.loads((run / "best" / "config.json").read_text())
    assert best == top[0] and len(top) == 3
    # full-length trials first, each by its best epoch; then those ASHA stopped
    full = trials[trials["status"] == "completed"]
    assert len(full) and best["value"] == full["val/kappa"].max()
    ranked = [trials.set_index("trial_id").loc[t["trial_id"]] for t in top]
    keys = [(row["status"] != "completed", -row["val/kappa"]) for row in ranked]
    assert keys == sorted(keys)
    assert best["config"]["image_size"] == 64 and best["config"]["data"] == str(course_demo)


def test_the_study_says_what_the_run_folder_says(small_run: Path) -> None:
    """Opened with Optuna (as optuna-dashboard opens it), the study holds each trial's epochs
    and the run folder's best trial as its best (ASHA's stops as PRUNED: test_replay.py, where
    the curves make sure that ASHA stops one)."""
    study_agrees_with_run_folder(small_run)


def test_a_nan_trial_is_recorded_failed_and_the_search_goes_on(local_ray: None,
                                                              course_demo: Path,
                                                              tmp_path: Path) -> None:
    code = run_main(["deepdrid_finetune", "--data", str(course_demo), "--results", str(tmp_path),
                     "--name", "nan", "--num-samples", "2", "--max-epochs", "2",
                     "--set", "lr=1e30", "--set", "warmup_epochs=0", *TINY, *ONE_AT_A_TIME,
                     "--set", "max_train_batches=1"])
    assert code == 1  # no trial produced a result
    run = tmp_path / "deepdrid_finetune" / "nan"
    trials = pd.read_parquet(run / "trials.parquet")
    assert len(trials) == 2  # both were run: one failure does not stop the search
    assert set(trials["status"]) == {"failed"}
    assert all("train loss is" in e and "epoch 2" in e for e in trials["error"])
    for trial in (run / "tune").glob("trial_*"):  # Ray's own record of each try: 1 + 2 retries
        tries = [line for line in (trial / "error.txt").read_text().splitlines()
                 if line.startswith("Failure # ")]
        assert [t.split()[2] for t in tries] == ["1", "2", "3"], tries
    assert (trials["lr"] == 1e30).all()  # --set fixed a searched key for every trial
    study = optuna.load_study(study_name="nan", storage=f"sqlite:///{run / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert not (run / "best" / "config.json").exists()  # no fake score
    # a failed trial keeps its latest checkpoint (what --resume would continue from), only it
    for trial in (run / "tune").glob("trial_*"):
        kept = [p.name for p in trial.glob("checkpoint_*")]
        assert len(kept) == 1, kept
        assert (trial / kept[0] / "optimizer.safetensors").is_file()


def test_an_existing_run_is_not_overwritten(course_demo: Path, tmp_path: Path) -> None:
    (tmp_path / "deepdrid_finetune" / "taken").mkdir(parents=True)
    with pytest.raises(ConfigError, match="exists: continue it with --resume"):
        run_main(["deepdrid_finetune", "--data", str(course_demo), "--results", str(tmp_path),
                  "--name", "taken", *TINY])


def test_resume_without_a_run_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no run of this experiment"):
        run_main(["deepdrid_finetune", "--results", str(tmp_path), "--resume"])


def test_wandb_offline_without_a_key_and_off_when_asked(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from search.engine.search import wandb_setup

    monkeypatch.delenv("WANDB_MODE")
    callbacks, env, line = wandb_setup(True, tmp_path, "g1")
    assert len(callbacks) == 1 and env["WANDB_MODE"] == "offline"
    assert "offline (no WANDB_API_KEY)" in line
    assert wandb_setup(False, tmp_path, "g1") == ([], {}, "W&B: off (--no-wandb)")
    # a key with WANDB_MODE=offline: offline, and the key leaves this process's environment
    # (Ray's W&B callback would pass it on in a runtime env, which Ray writes into its logs)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    _, env, line = wandb_setup(True, tmp_path, "g1")
    assert env["WANDB_MODE"] == "offline" and "offline (WANDB_MODE=offline)" in line
    assert "WANDB_API_KEY" not in os.environ
    # online: W&B keeps the key where `wandb login` does (~/.netrc), read by the logging actor,
    # also after an offline W&B run in this process (a notebook's earlier search)
    import wandb

    wandb.init(mode="offline", dir=str(tmp_path), project="earlier").finish()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE")
    callbacks, env, line = wandb_setup(True, tmp_path, "g1")
    assert env["WANDB_MODE"] == "online" and "online" in line
    assert "x" * 40 not in line and "x" * 40 not in str(env)  # the key never reaches output
    assert "WANDB_API_KEY" not in os.environ and "x" * 40 in (tmp_path / ".netrc").read_text()
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # as if not installed
    assert wandb_setup(True, tmp_path, "g1")[2].startswith("W&B: off (wandb is not installed")


def test_list_prints_every_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    from search.list import main as list_main

    assert list_main([]) == 0
    out = capsys.readouterr().out
    for name, experiment in EXPERIMENTS.items():
        assert name in out and experiment.data_format in out
        assert ", ".join(experiment.searched) in out
    assert list_main(["deepdrid_attention"]) == 0
    assert "python -m search.run deepdrid_attention --demo" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="known: deepdrid_finetune, deepdrid_attention"):
        list_main(["nope"])


@pytest.fixture(scope="module")
def final_run(small_run: Path) -> dict:
    """The final step on the small search, once: 2 members."""
    from search.final import run_final

    return run_final(small_run, top_k=2, echo=lambda line: None)


def test_final_step_writes_members_bag_and_submission(small_run: Path, final_run: dict,
                                                      course_demo: Path) -> None:
    summary = final_run
    assert len(summary["members"]) == 2 and {"kappa", "accuracy", "f1_macro"} <= set(
        summary["bag"]["val"])
    assert [m["seed"] for m in summary["members"]] == [1, 2]  # each member its own seed
    submission = pd.read_csv(small_run / "submission" / "test_predictions.csv")
    test_csv = pd.read_csv(course_demo / "test.csv")
    assert list(submission.columns) == ["ID", "TARGET"]
    assert submission["ID"].tolist() == [f"{i}.jpg" for i in test_csv["image_id"]]  # test.csv order
    assert submission["TARGET"].between(0, 4).all()
    for i in (1, 2):
        member = pd.read_csv(small_run / "submission" / f"member_{i}.csv")
        probs = member[[f"p{c}" for c in range(5)]].to_numpy()
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
        assert (member["TARGET"] == probs.argmax(1)).all()
        folder = small_run / "final" / f"member_{i}"
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["class_names"][0] == "0 no DR" and meta["input"]["size"] == 64
        assert meta["config"]["bootstrap"] == i - 1 and meta["data_fingerprint"]
        assert meta["versions"]["torch"]
        assert (folder / "model.safetensors").is_file()
    # the experiment's defaults, trained with the members' seeds and samples beside them
    gain = summary["gain"]
    assert gain["defaults"]["seeds"] == [1, 2] and gain["defaults"]["failed"] == []
    assert gain["defaults"]["config"]["lr"] == 3e-4  # deepdrid_attention's own, not searched
    assert sorted(p.name for p in (small_run / "final" / "defaults").iterdir()) == [
        "seed_1_test.csv", "seed_1_val.csv", "seed_2_test.csv", "seed_2_val.csv"]
    assert "test" not in gain  # the DeepDRiD test split has no labels
    assert gain["unit"] == "patients" and gain["val"]["units"] == 3  # 4 images a patient
    # the run's cost: the search's trials as trials.parquet holds them, the 4 models of the
    # final step (2 members, the defaults twice) for the minutes each one's metadata says
    ledger = json.loads((small_run / "final" / "metrics.json").read_text())["ledger"]
    trials = pd.read_parquet(small_run / "trials.parquet")
    assert ledger["search"]["trials"] == 4 and ledger["final"]["models"] == 4
    assert ledger["search"]["gpu_hours"] == pytest.approx(trials["gpu_hours"].sum())
    minutes = [json.loads((small_run / "final" / f"member_{i}" / "metadata.json").read_text())[
        "trained_on"]["minutes"] for i in (1, 2)]
    members = [m for m in ledger["final_models"] if m["model"].startswith("member")]
    assert [m["gpu_hours"] for m in members] == pytest.approx([0.5 * m / 60 for m in minutes])
    assert ledger["total"]["gpu_hours"] == pytest.approx(
        ledger["search"]["gpu_hours"] + ledger["final"]["gpu_hours"])
    assert set(ledger["node_types"]) == {"unlabelled"}
    page = (small_run / "report" / "index.html").read_text()
    assert "<h2>Cost</h2>" in page
    # node ids short on the page (the whole id stays in trials.parquet and metadata.json)
    assert not any(node in page for node in trials["node_id"])
    assert all(node[:8] in page for node in trials["node_id"])
    # optuna-dashboard shows the study's labels: the final step adds the report's link
    study = optuna.load_study(study_name="r1", storage=f"sqlite:///{small_run / 'study.db'}")
    assert study.user_attrs["report"] == \
        f"{small_run.resolve()}/report/index.html#best-trials"
    assert study.user_attrs["experiment"] == "deepdrid_attention"
    assert study.user_attrs["run_folder"] == str(small_run)
    # a bag of two members: the mean of their probabilities decides
    m1, m2 = (pd.read_csv(small_run / "submission" / f"member_{i}.csv") for i in (1, 2))
    cols = [f"p{c}" for c in range(5)]
    expected = ((m1[cols].to_numpy() + m2[cols].to_numpy()) / 2).argmax(1)
    assert submission["TARGET"].tolist() == expected.tolist()


def test_the_readmes_picture_is_the_report_drawn_by_a_browser(small_run: Path, final_run: dict,
                                                             tmp_path: Path) -> None:
    """python -m search.screenshot: the report's first screen as a PNG of the asked size, not
    blank; a run folder without a report is one line."""
    import shutil

    from PIL import Image

    from search.screenshot import BROWSERS
    from search.screenshot import main as screenshot_main

    if not any(map(shutil.which, BROWSERS)):
        pytest.skip("no Chromium here to draw the report with")
    assert screenshot_main([str(small_run), "--out", str(tmp_path / "report.png"),
                            "--width", "400", "--height", "300"]) == 0
    picture = np.asarray(Image.open(tmp_path / "report.png").convert("L"))
    assert picture.shape == (300, 400) and picture.std() > 10  # text and figures drawn
    with pytest.raises(ConfigError, match=r"report/index.html does not exist: run the final"):
        screenshot_main([str(tmp_path)])


def test_a_gpu_hour_budget_stops_new_trials_and_says_so(local_ray: None, course_demo: Path,
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """--budget-gpu-hours: once the first trial has run an epoch, its hours and one more trial
    would pass a tiny budget: no second trial, a line that says why, exit 0; without GPUs per
    trial the budget is refused."""
    args = ["deepdrid_attention", "--data", str(course_demo), "--results", str(tmp_path),
            "--num-samples", "4", "--max-epochs", "2", "--max-concurrent", "1", "--no-final",
            *TINY]
    with pytest.raises(ConfigError, match="--budget-gpu-hours counts GPU-hours"):
        run_main([*args, "--name", "cpu", "--budget-gpu-hours", "1"])
    assert run_main([*args, "--name", "b", "--gpus-per-trial", "0.5",
                     "--budget-gpu-hours", "0.000001"]) == 0
    said = capsys.readouterr().out
    trials = pd.read_parquet(tmp_path / "deepdrid_attention" / "b" / "trials.parquet")
    assert len(trials) == 1 and trials["status"].iloc[0] == "completed"
    assert re.search(r"stopped making trials: --budget-gpu-hours 1e-06: [\d.]+ GPU-hours "
                     r"spent, [\d.]+ with the running trials' rest and one more trial: no new "
                     r"trial; the search ended with 1 of 4 trials", said), said
    assert f"cost: {trials['gpu_hours'].sum():.3f} GPU-hours of the 1e-06 budgeted" in said


def test_a_member_that_fails_on_its_own_leaves_the_bag_to_the_others(
        small_run: Path, final_run: dict, tmp_path: Path) -> None:
    """Member 2's configuration diverges (a NaN loss in its second epoch, a real failure in
    its Ray task, not retried): the step goes on, says so, and bags member 1 alone."""
    import shutil

    from search.final import run_final

    run = tmp_path / small_run.name  # the study in study.db is named after the folder
    shutil.copytree(small_run, run)
    top_file = run / "best" / "top_k.json"
    top = json.loads(top_file.read_text())
    top[1]["config"].update(lr=1e30, warmup_epochs=0)
    top_file.write_text(json.dumps(top))
    lines: list[str] = []
    summary = run_final(run, top_k=2, baseline=False, echo=lines.append)
    assert [m["member"] for m in summary["members"]] == [1]
    [failed] = summary["failed"]
    assert failed["member"] == 2 and failed["trial_id"] == top[1]["trial_id"]
    assert "train loss is" in failed["error"] and "epoch 2" in failed["error"]
    assert any(line.startswith("member 2 FAILED: ") for line in lines)
    assert any(f"member 2 (trial {top[1]['trial_id']}) failed" in line for line in lines)
    assert summary["bag"]["val"] == summary["members"][0]["val"]  # the bag is member 1
    assert sorted(p.name for p in (run / "final").glob("member_*")) == ["member_1"]
    submission = pd.read_csv(run / "submission" / "test_predictions.csv")
    member = pd.read_csv(run / "submission" / "member_1.csv")
    assert submission["TARGET"].tolist() == member["TARGET"].tolist()
    assert not (run / "submission" / "member_2.csv").exists()
    written = json.loads((run / "final" / "metrics.json").read_text())
    assert written["failed"] == summary["failed"]


def test_the_demos_bench_reads_its_rows_from_the_run_folder(small_run: Path, final_run: dict,
                                                             course_demo: Path) -> None:
    """search.bench demos on a finished run folder (the quick start's experiment): the bag
    against the defaults' mean, checked against scikit-learn's QWK of each default's
    predictions (final/defaults/*.csv) and of the bag's submission-free validation bag, and
    the run folder's size against the files on disk."""
    from sklearn.metrics import cohen_kappa_score

    from search.bench.demos import demo_rows
    from trainables.data.formats import read_dataset

    rows = {r["measure"].split(";")[0]: r for r in demo_rows("deepdrid_attention", small_run, 2.5)}
    index = read_dataset("deepdrid", course_demo)
    truth = dict(zip(index.submission_ids("val"), index.targets("val"), strict=True))

    def qwk(csv: Path) -> float:
        predicted = pd.read_csv(csv)
        return cohen_kappa_score([truth[i] for i in predicted["ID"]], predicted["TARGET"],
                                 weights="quadratic")

    gain = rows["deepdrid_attention: the bag's validation QWK vs the defaults' mean (2 seeds)"]
    defaults = [qwk(small_run / "final" / "defaults" / f"seed_{s}_val.csv") for s in (1, 2)]
    assert gain["baseline"] == pytest.approx(np.mean(defaults))
    bag = np.load(small_run / "final" / "val_bag_probs.npy").argmax(1)
    assert gain["ours"] == pytest.approx(cohen_kappa_score(index.targets("val"), bag,
                                                           weights="quadratic"))
    on_disk = sum(p.stat().st_size for p in small_run.rglob("*") if p.is_file()) / 1e6
    assert rows["deepdrid_attention: run folder MB"]["ours"] == pytest.approx(on_disk, rel=0.05)
    assert rows["deepdrid_attention: minutes, search and final step"]["ours"] == 2.5


def test_training_starts_from_a_members_model_file(small_run: Path, final_run: dict,
                                                  course_demo: Path, tmp_path: Path) -> None:
    """`search.train EXP --set weights=RUN/final/member_1/model.safetensors` starts from that
    member, its head too (an attention pool where it has one): with the backbone frozen (its
    BatchNorm statistics too) and a learning rate of nothing, the model after an epoch is the
    member's, tensor for tensor."""
    from safetensors.torch import load_file

    from search.train import main as train_main

    members = sorted((small_run / "final").glob("member_*"))
    configs = [json.loads((m / "metadata.json").read_text())["config"] for m in members]
    i = next((i for i, c in enumerate(configs) if c.get("attention")), 0)
    member, config = members[i], configs[i]
    same = [a for k in ("model", "image_size", "preprocess", *CONDITIONAL, "attention", "dropout")
            if k in config for a in ("--set", f"{k}={config[k]}")]
    frozen = ["--set", "lr=1e-30", "--set", "unfreeze_depth=0", "--set", "warmup_epochs=0",
              "--set", "max_train_batches=1", "--set", "max_eval_batches=2", "--set", "device=cpu"]
    out = tmp_path / "from_member"
    assert train_main(["deepdrid_attention", "--data", str(course_demo), "--epochs", "1",
                       "--out", str(out), *same, *frozen,
                       "--set", f"weights={member / 'model.safetensors'}"]) == 0
    given = load_file(str(member / "model.safetensors"))
    trained = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    assert set(trained) == set(given)
    assert any(k.startswith("attention.") for k in given) == bool(config.get("attention"))
    for k, v in given.items():
        torch.testing.assert_close(trained[k], v, rtol=0, atol=1e-6, msg=k)
    assert len(json.loads((out / "metrics.json").read_text())) == 1


def test_report_opens_with_every_image_and_section(small_run: Path, final_run: dict,
                                                   tmp_path: Path) -> None:
    from tests.test_report import open_in_chromium

    seen = open_in_chromium(small_run / "report" / "index.html", tmp_path)
    assert len(seen["images"]) >= 10
    assert all(i["loaded"] for i in seen["images"]), [i for i in seen["images"] if not i["loaded"]]
    assert all(not i["src"].startswith(("/", "file:")) for i in seen["images"])  # relative paths
    for heading in ("Run", "Best trials", "Optimisation history", "Parameter importances",
                    "Each parameter against the metric", "Training curves of the best trials",
                    "Final: the bag against its members", "Confusion matrix of the bag (validation)",
                    "Per-class table of the bag (validation)", "Grad-CAM gallery",
                    "Lesion localisation (Grad-CAM against the lesion masks)"):
        assert heading in seen["headings"]
    assert any(i["src"].startswith("gradcam/") for i in seen["images"])
    assert final_run["localisation"]["images"] > 0
    page = (small_run / "report" / "index.html").read_text()
    assert "minutes of wall time" in page and "deepdrid_attention" in page


def test_trials_that_cannot_be_placed_stop_the_search_which_resumes_later(
        local_ray: None, course_demo: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The one GPU is held by another job: the request fits a node, so it is accepted, but no
    trial can start. After --placement-timeout the search stops as Ctrl-C would; once the GPU
    is free, --resume runs the trials."""

    @ray.remote(num_cpus=0, num_gpus=1)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()  # type: ignore[attr-defined]
    assert ray.get(holder.ready.remote())
    args = ["deepdrid_finetune", "--data", str(course_demo), "--results", str(tmp_path),
            "--name", "wait", "--num-samples", "2", "--max-epochs", "1", "--gpus-per-trial", "1",
            "--placement-timeout", "0.1", "--no-final", *TINY]
    assert run_main(args) == 1
    out = capsys.readouterr().out
    assert "trial(s) pending (1 CPU + 1 GPU each), waiting for a node with them free" in out
    assert re.search(r"stopped: no trial could be placed for 0\.\d min \(each asks for 1 CPU \+ "
                     r"1 GPU on one node; no node had them free", out), out
    assert "--name wait --resume" in out
    run = tmp_path / "deepdrid_finetune" / "wait"
    assert set(pd.read_parquet(run / "trials.parquet")["status"]) == {"not run"}

    # what a driver killed before it saved its state leaves: a trial folder no state knows
    orphan = run / "tune" / "trial_0rphan00" / "checkpoint_000000"
    orphan.mkdir(parents=True)
    (orphan / "model.safetensors").write_bytes(b"weights nothing can resume")
    # an older medtune's search: its tuner.pkl names a searcher module this one lacks
    resume = ["deepdrid_finetune", "--results", str(tmp_path), "--name", "wait", "--resume",
              "--placement-timeout", "5", "--no-final"]
    pickled = (run / "tune" / "tuner.pkl").read_bytes()
    assert b"search.engine.searcher" in pickled
    (run / "tune" / "tuner.pkl").write_bytes(pickled.replace(b"search.engine.searcher",
                                                             b"search.engine.searchex"))
    with pytest.raises(ConfigError) as e:
        run_main(resume)
    assert str(e.value) == (
        f"--resume: {run / 'tune'} was started by an older medtune whose searcher or callbacks "
        "this one no longer has (No module named 'search.engine.searchex'); start a new run with "
        f"--warm-start {run} to carry its finished trials over")
    (run / "tune" / "tuner.pkl").write_bytes(pickled)
    ray.kill(holder)
    assert run_main(resume) == 0
    trials = pd.read_parquet(run / "trials.parquet")
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    assert list((run / "tune").glob("trial_*/checkpoint_*")) == []  # the orphan's included
    assert len(list((run / "tune").glob("trial_*/result.json"))) == 2  # the rest stays


def test_without_a_test_split_the_final_step_bags_on_validation_and_writes_no_submission(
        local_ray: None, original_demo: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The original DeepDRiD release may come without regular-fundus-testing.csv."""
    import shutil

    data = Path(shutil.copytree(original_demo, tmp_path / "deepdrid"))
    shutil.rmtree(data / "regular-fundus-testing")
    code = run_main(["deepdrid_finetune", "--data", str(data), "--results", str(tmp_path),
                     "--name", "notest", "--num-samples", "2", "--max-epochs", "1", *TINY,
                     *ONE_AT_A_TIME])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no test split in this dataset: no submission written" in out
    assert "no submission (no test split)" in out and "run folder on disk: " in out
    run = tmp_path / "deepdrid_finetune" / "notest"
    assert not (run / "submission").exists()
    summary = json.loads((run / "final" / "metrics.json").read_text())
    assert summary["submission"] is None and len(summary["members"]) == 2
    # the bag's validation accuracy is that of the bag's saved probabilities on the split's
    # labels, one row per validation image of the set's own CSV
    from trainables.data.formats import read_dataset

    probs = np.load(run / "final" / "val_bag_probs.npy")
    val = read_dataset("deepdrid", data).split("val")
    assert len(probs) == len(val) == len(pd.read_csv(next(data.rglob("*-validation.csv"))))
    assert summary["bag"]["val"]["accuracy"] == pytest.approx(
        float((probs.argmax(axis=1) == val["label"].to_numpy()).mean()))
    page = (run / "report" / "index.html").read_text()
    assert "no test split in this dataset: no submission was written" in page


def test_a_search_on_two_objectives_writes_its_front_and_the_final_step_picks_from_it(
        local_ray: None, course_demo: Path, tmp_path: Path) -> None:
    """QWK and latency: Optuna's multi-objective study holds both at each full-length trial's
    best epoch, ASHA's stops PRUNED without values; best/pareto.json is the front worked out
    from the run folder's tables; --pick takes the members from the front under a constraint."""
    from search.engine.objectives import front
    from search.final import run_final

    code = run_main(["deepdrid_finetune", "--data", str(course_demo), "--results", str(tmp_path),
                     "--name", "mo", "--num-samples", "5", "--max-epochs", "2",
                     "--objectives", "val/kappa,latency", "--no-final", *TINY, *ONE_AT_A_TIME])
    assert code == 0
    run = tmp_path / "deepdrid_finetune" / "mo"
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{run / 'study.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trials = pd.read_parquet(run / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert (epochs["model/latency_ms"] > 0).all() and (epochs["model/params"] > 1e6).all()
    points = []
    for t in study.trials:
        row = trials.loc[t.user_attrs["ray_trial"]]
        curve = epochs[epochs["trial_id"] == row.name]
        assert t.user_attrs["curve"] == {str(e): v for e, v in zip(curve["epoch"],
                                                                   curve["val/kappa"],
                                                                   strict=True)}
        if row["status"] == "stopped early":
            assert t.state == optuna.trial.TrialState.PRUNED and t.values is None
            continue
        at = curve[curve["epoch"] == row["best_epoch"]].iloc[0]
        assert t.values == [at["val/kappa"], at["model/latency_ms"]]
        points.append((row.name, t.values))
    pareto = json.loads((run / "best" / "pareto.json").read_text())
    assert [r["trial_id"] for r in pareto] == sorted(
        front(points, ["max", "min"]), key=lambda i: -dict(points)[i][0])
    assert all(set(r["objectives"]) == {"val/kappa", "latency"} for r in pareto)

    bound = sorted(r["objectives"]["latency"] for r in pareto)[0]  # the fastest on the front
    summary = run_final(run, top_k=2, pick=f"latency<={bound}", baseline=False,
                        echo=lambda line: None)
    fastest = [r["trial_id"] for r in pareto if r["objectives"]["latency"] <= bound]
    assert [m["trial_id"] for m in summary["members"]] == fastest[:2]
    page = (run / "report" / "index.html").read_text()
    assert "Pareto front" in page and (run / "report" / "pareto.png").is_file()
    with pytest.raises(ConfigError, match="no trial of the Pareto front meets it"):
        run_final(run, pick="latency<=0", echo=lambda line: None)
