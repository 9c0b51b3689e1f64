"""The search CLI end to end in fresh processes (slow): a demo search, reproduce, SIGKILL + resume,
a run folder on an object store (a file:// URI) resumed from another machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

TINY = ["--set", "model=resnet18", "--set", "weights=none", "--set", "image_size=64",
        "--set", "max_train_batches=2", "--set", "max_eval_batches=2", "--set", "device=cpu"]


def search(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "search.run", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_search_then_reproduce_the_best_trial(course_demo: Path, tmp_path: Path) -> None:
    result = search("deepdrid_attention", "--data", str(course_demo), "--results", str(tmp_path),
                    "--name", "e2e", "--num-samples", "3", "--max-epochs", "2", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B: offline" in result.stdout  # wandb is installed, no API key
    assert "best val/kappa" in result.stdout and "done" in result.stdout
    run = tmp_path / "deepdrid_attention" / "e2e"
    # the final step followed the search: members, bag, submission
    assert "bag (mean)" in result.stdout
    assert len(pd.read_csv(run / "submission" / "test_predictions.csv")) == 8
    assert len(list((run / "final").glob("member_*/model.safetensors"))) == 3
    # one offline W&B run per trial, and one for the final step
    assert len(list((run / "wandb").glob("offline-run-*"))) == 4
    assert "W&B: final run logged offline" in result.stdout
    best = run / "best" / "config.json"
    reproduced = subprocess.run([sys.executable, "-m", "search.reproduce", str(best)],
                                capture_output=True, text=True, timeout=600)
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    report = json.loads(next((run / "reproduce").glob("*/reproduce.json")).read_text())
    assert report["difference"] <= 0.01
    assert "reproduced" in reproduced.stdout and ": OK" in reproduced.stdout


def _completed_trials(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(db) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_resume_after_the_driver_is_stopped_keeps_every_completed_trial(
        course_demo: Path, tmp_path: Path, stop: signal.Signals) -> None:
    args = ["deepdrid_finetune", "--data", str(course_demo), "--results", str(tmp_path),
            "--name", "killed", "--num-samples", "6", "--max-epochs", "3", "--no-wandb", "--no-final",
            "--set", "batch_size=8", *TINY]
    run = tmp_path / "deepdrid_finetune" / "killed"
    driver = subprocess.Popen([sys.executable, "-m", "search.run", *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # its own process group, Ray included
    deadline = time.monotonic() + 600
    while _completed_trials(run / "study.db") < 2 and time.monotonic() < deadline:
        assert driver.poll() is None, "the search ended before it could be killed"
        time.sleep(1)
    if stop == signal.SIGKILL:
        time.sleep(2)  # let Ray write its experiment state once more
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray die at once
        driver.wait()
    else:  # Ctrl-C: Ray Tune saves its state, the driver writes its tables and says so
        os.killpg(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=120) == 130
        assert len(pd.read_parquet(run / "trials.parquet")) >= 2
    before = _completed_trials(run / "study.db")
    assert 2 <= before < 6

    result = search(*args, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = pd.read_parquet(run / "trials.parquet")
    assert len(trials) == 6 and trials["trial_id"].is_unique  # the planned number, none twice
    assert set(trials["status"]) <= {"completed", "stopped early"}, trials[["status", "error"]]
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()  # no epoch trained twice
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{run / 'study.db'}")
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    assert states.count(optuna.trial.TrialState.COMPLETE) >= before


@pytest.mark.slow
def test_a_run_on_an_object_store_resumes_on_another_machine(course_demo: Path,
                                                             tmp_path: Path) -> None:
    """--results URI: the first driver dies with its stage; a second one, with another local
    cache, resumes from the URI alone and the final step's files land there too."""
    bucket = (tmp_path / "bucket").as_uri()
    args = ["deepdrid_finetune", "--data", str(course_demo), "--results", bucket, "--name", "obj",
            "--num-samples", "6", "--max-epochs", "3", "--no-wandb", "--set", "batch_size=8", *TINY]
    first, second = tmp_path / "head-1", tmp_path / "head-2"
    driver = subprocess.Popen([sys.executable, "-m", "search.run", *args],
                              env={**os.environ, "MEDTUNE_CACHE": str(first)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    stage = first / "runs" / "deepdrid_finetune" / "obj"
    deadline = time.monotonic() + 600
    while _completed_trials(stage / "study.db") < 2 and time.monotonic() < deadline:
        assert driver.poll() is None, "the search ended before it could be killed"
        time.sleep(1)
    time.sleep(2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    run = tmp_path / "bucket" / "deepdrid_finetune" / "obj"
    assert (run / "config.json").is_file() and (run / "tune" / "study.db").is_file()
    assert not (run / "trials.parquet").exists()  # the search never finished on head 1
    shutil.rmtree(first)  # that machine is gone

    env = {**os.environ, "MEDTUNE_CACHE": str(second)}
    result = subprocess.run([sys.executable, "-m", "search.run", *args, "--resume"], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"submission: {bucket}/deepdrid_finetune/obj/submission/test_predictions.csv" in result.stdout
    trials = pd.read_parquet(run / "trials.parquet")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "stopped early"}, trials[["status", "error"]]
    assert not pd.read_parquet(run / "epochs.parquet").duplicated(["trial_id", "epoch"]).any()
    study = optuna.load_study(study_name="obj", storage=f"sqlite:///{run / 'study.db'}")
    assert len(study.trials) == 6
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.trials]
    assert len(pd.read_csv(run / "submission" / "test_predictions.csv")) == 8
    assert len(list((run / "final").glob("member_*/model.safetensors"))) == 3
    assert (run / "report" / "index.html").is_file()

    reproduced = subprocess.run(
        [sys.executable, "-m", "search.reproduce", f"{bucket}/deepdrid_finetune/obj/best/config.json"],
        env=env, capture_output=True, text=True, timeout=600)
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    assert list((run / "reproduce").glob("*/reproduce.json"))
