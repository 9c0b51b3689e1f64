"""The search CLI end to end in fresh processes (slow): a demo search, reproduce, Ctrl-C +
resume, a run folder on an S3 server whose driver is killed (SIGKILL) and resumed from another
machine, a store that fails under a search."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from ray.cluster_utils import Cluster

from tests.helpers import free_port, logged_results, s3_download, s3_server, study_agrees_with_run_folder

TINY = ["--set", "model=resnet18", "--set", "weights=none", "--set", "image_size=64",
        "--set", "max_train_batches=2", "--set", "max_eval_batches=2", "--set", "device=cpu"]


def search(*args: str, timeout: float = 900,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "search.run", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def reproduce(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "search.reproduce", *args],
                          capture_output=True, text=True, timeout=600)


FAKE_KEY = "medtunefakekey" + "0123456789abcdef" * 2  # a W&B key is 40 characters or more


def files_holding(folder: Path, text: str) -> list[Path]:
    """Every file under `folder` holding `text`; a file that cannot be read fails the scan (a
    file gone between listing and reading, as Ray's live session files go, holds nothing)."""
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if text.encode() in path.read_bytes():
                    hits.append(path)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise AssertionError(f"cannot read {path} to scan it: {e}") from e
    return hits


@pytest.mark.slow
def test_search_then_reproduce_the_best_trial(course_demo: Path, tmp_path: Path) -> None:
    # an API key in the environment, W&B offline: the key must not reach any file or log
    env = {**os.environ, "WANDB_API_KEY": FAKE_KEY, "WANDB_MODE": "offline"}
    started = time.time()
    result = search("deepdrid_attention", "--data", str(course_demo), "--results", str(tmp_path),
                    "--name", "e2e", "--num-samples", "3", "--max-epochs", "2", *TINY, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B: offline" in result.stdout
    assert "best val/kappa" in result.stdout and "done" in result.stdout
    run = tmp_path / "deepdrid_attention" / "e2e"
    # the final step followed the search: members, bag, submission
    assert "bag (mean)" in result.stdout
    assert len(pd.read_csv(run / "submission" / "test_predictions.csv")) == 8
    assert len(list((run / "final").glob("member_*/model.safetensors"))) == 3
    assert {p.name for p in (run / "final" / "member_1").iterdir()} == {"model.safetensors",
                                                                        "metadata.json"}
    assert list((run / "tune").glob("trial_*/checkpoint_*")) == []
    assert "run folder on disk: " in result.stdout
    # one offline W&B run per trial, and one for the final step
    assert len(list((run / "wandb").glob("offline-run-*"))) == 4
    # every epoch's result reached its trial's W&B run (the callback queues them off the
    # driver's thread): its exact val/loss is in the run's file
    epochs = pd.read_parquet(run / "epochs.parquet")
    for trial_id, rows in epochs.groupby("trial_id"):
        logged = next((run / "wandb").glob(f"offline-run-*-{trial_id}/*.wandb")).read_bytes()
        assert all(json.dumps(float(v)).encode() in logged for v in rows["val/loss"]), trial_id
    # Ray's own lines are in the run's log, not on the console
    assert (run / "search.log").is_file()
    assert "core_worker" not in result.stderr and "callbacks.on_trial_result" not in result.stderr
    assert "W&B: final run logged offline" in result.stdout
    # what the search bought: the defaults trained beside the members, logged to W&B too
    assert "what the search bought over the experiment's defaults" in result.stdout
    gain = json.loads((run / "final" / "metrics.json").read_text())["gain"]
    assert len(gain["defaults"]["seeds"]) == 3 and "val" in gain
    assert files_holding(run / "wandb", "final/val_bag_gain")  # the final W&B run's file
    assert FAKE_KEY not in result.stdout + result.stderr
    assert files_holding(run, FAKE_KEY) == []
    # the search's Ray, among those started on this machine since (other modules run beside)
    sessions = [d for d in Path("/tmp/ray").glob("session_2*") if d.stat().st_mtime >= started]
    assert sessions and all(files_holding(d / "logs", FAKE_KEY) == [] for d in sessions)

    best = run / "best" / "config.json"
    reproduced = reproduce(str(best))
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    report = json.loads(next((run / "reproduce").glob("*/reproduce.json")).read_text())
    assert report["difference"] <= 0.01
    assert "reproduced" in reproduced.stdout and ": OK" in reproduced.stdout
    # tiny trials score QWK 0 whatever they learn; the validation loss tells them apart
    record = json.loads(best.read_text())
    assert report["epoch_row"]["val/loss"] == pytest.approx(record["val_loss"], rel=1e-4)
    assert report["loss_difference"] <= 1e-4

    # a real mismatch: the same record trained with another learning rate
    record["config"]["lr"] *= 10
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(record))
    mismatch = reproduce(str(changed), "--out", str(tmp_path / "mismatch"))
    assert mismatch.returncode == 1, mismatch.stdout + mismatch.stderr
    assert "val loss" in mismatch.stdout and "DIFFERS" in mismatch.stdout


def _finished_trials(db: Path) -> dict[int, tuple[str, float | None]]:
    """Trials the study holds as run to their end, full length (COMPLETE) or stopped (PRUNED):
    {trial number: (state, value)}, read with sqlite from the file."""
    if not db.is_file():
        return {}
    try:
        with sqlite3.connect(db) as con:
            rows = con.execute(
                "select t.number, t.state, v.value from trials t left join trial_values v on "
                "v.trial_id = t.trial_id where t.state in ('COMPLETE', 'PRUNED')").fetchall()
    except sqlite3.DatabaseError:  # not written yet, or caught mid-copy
        return {}
    return {number: (state, value) for number, state, value in rows}


def _logged_epochs(run: Path) -> tuple[int, dict[str, int]]:
    """(distinct trial epochs, {trial: epochs logged twice}) from Ray's result.json files."""
    distinct, again = 0, {}
    for trial, results in logged_results(run).items():
        epochs = [r["epoch"] for r in results]
        distinct += len(set(epochs))
        if len(epochs) > len(set(epochs)):
            again[f"trial_{trial}"] = len(epochs) - len(set(epochs))
    return distinct, again


def check_resumed(run: Path, before: dict[int, tuple[str, float | None]], *,
                  logs_may_lag: bool = False) -> None:
    """A search stopped with the trials `before` ended and resumed: those same trials with the
    same states and values, every planned trial once, every epoch once, and nothing of the
    stopped session left over. `logs_may_lag`: on a slow store Ray may restore a trial's
    result.json from a copy that lags (cluster/README.md: known gaps): the tables then take
    the epochs the log lacks from the study, and the study is checked on its own."""
    trials = pd.read_parquet(run / "trials.parquet")
    assert len(trials) == 6 and trials["trial_id"].is_unique  # the planned number, none twice
    assert set(trials["status"]) <= {"completed", "stopped early"}, trials[["status", "error"]]
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    # every epoch Ray logged, once; where its log lags, the epochs it lacks come from the study
    assert len(epochs) >= _logged_epochs(run)[0] if logs_may_lag else \
        len(epochs) == _logged_epochs(run)[0]
    # Ray's raw logs: only an epoch in flight as the driver stopped (reported after Ray saved its
    # state) is trained again, once, and by at most the two trials that were running
    again = _logged_epochs(run)[1]
    assert all(n == 1 for n in again.values()) and len(again) <= 2, again
    if logs_may_lag:
        import optuna

        study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'study.db'}")
        ran = [t for t in study.trials if not t.user_attrs.get("left_running")]
        assert {t.user_attrs["ray_trial"] for t in ran} == set(trials["trial_id"])
        assert all(t.state.is_finished() for t in study.trials)  # none left RUNNING
    else:
        study = study_agrees_with_run_folder(run)  # no trial left RUNNING, each epoch told once
    assert len([t for t in study.trials if not t.user_attrs.get("left_running")]) == 6
    after = {t.number: (t.state.name, t.value) for t in study.trials}
    for number, (state, value) in before.items():  # kept as they were, not trained again
        assert after[number][0] == state and after[number][1] == pytest.approx(value), number
    # the resumed search ended every trial: no checkpoint is left, the killed session's included
    assert list((run / "tune").glob("trial_*/checkpoint_*")) == []


def wait_for_two_trials(driver: subprocess.Popen[bytes], study: Path) -> None:
    """Until two trials of the search's study have ended (the driver still running)."""
    deadline = time.monotonic() + 600
    while len(_finished_trials(study)) < 2 and time.monotonic() < deadline:
        assert driver.poll() is None, "the search ended before it could be stopped"
        time.sleep(1)


@pytest.mark.slow
def test_resume_after_ctrl_c_over_ray_client_keeps_every_completed_trial(course_demo: Path,
                                                                         tmp_path: Path) -> None:
    """Ctrl-C stops a reproducible search (batches of 2) on this machine; it resumes through
    Ray Client (a ray:// address), where Ray runs the restored Tuner on the cluster, out of the
    driver's reach: the searcher reopens the study from what it saved, with the batch it had
    asked. SIGKILL and a resume on another machine: the object-store test below."""
    args = ["deepdrid_finetune", "--data", str(course_demo), "--results", str(tmp_path),
            "--name", "killed", "--num-samples", "6", "--max-epochs", "3", "--no-wandb", "--no-final",
            "--reproducible", "2", "--set", "batch_size=8", *TINY]
    run = tmp_path / "deepdrid_finetune" / "killed"
    printed = tmp_path / "stdout.txt"
    local = {**os.environ, "RAY_ADDRESS": "local"}  # the first driver starts a Ray of its own
    with open(printed, "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "search.run", *args],
                                  stdout=out, stderr=subprocess.DEVNULL, env=local,
                                  start_new_session=True)  # its own process group, Ray included
    wait_for_two_trials(driver, run / "study.db")
    # Ctrl-C: Ray Tune saves its state, the driver writes its tables and says so
    os.killpg(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=120) == 130
    assert len(pd.read_parquet(run / "trials.parquet")) >= 2
    assert (f"the search was interrupted: continue it with python -m search.run "
            f"deepdrid_finetune --results {tmp_path} --name killed --resume"
            ) in printed.read_text()
    before = _finished_trials(run / "study.db")
    assert 2 <= len(before) < 6

    client = free_port()  # a cluster of its own (`ray stop` would stop every Ray here)
    head = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "ray_client_server_port": client, "include_dashboard": False})
    try:  # the cluster asks every driver for its token (Ray 2.60): a client sends it so
        env = {**local, "RAY_ADDRESS": f"ray://127.0.0.1:{client}", "RAY_AUTH_MODE": "token"}
        result = search(*args, "--resume", env=env)
    finally:
        head.shutdown()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"resuming {run}" in result.stdout
    check_resumed(run, before)


@pytest.mark.slow
def test_a_run_on_s3_resumes_on_another_machine_after_sigkill(course_demo: Path,
                                                               tmp_path: Path) -> None:
    """--results s3://, on a real S3-protocol server: the first driver is killed (SIGKILL)
    with its stage; a second one, with another local cache, resumes from the bucket alone, the
    final step's files land there too, and the best trial reproduces from its s3:// config."""
    args = ["deepdrid_finetune", "--data", str(course_demo), "--results", "s3://medtune/runs",
            "--name", "obj", "--num-samples", "6", "--max-epochs", "3", "--no-wandb",
            "--no-baseline", "--set", "batch_size=8", *TINY]
    prefix = "medtune/runs/deepdrid_finetune/obj"
    first, second = tmp_path / "head-1", tmp_path / "head-2"
    with s3_server(tmp_path / "moto.log") as s3:
        driver = subprocess.Popen([sys.executable, "-m", "search.run", *args],
                                  env={**os.environ, **s3, "MEDTUNE_CACHE": str(first)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        # what survives the machine is the study saved with Ray's last experiment state on
        # the store: a trial that ended on the machine after that is running there, and runs
        # again
        seen = tmp_path / "seen" / "study.db"
        deadline = time.monotonic() + 600
        while len(_finished_trials(seen)) < 2:
            assert driver.poll() is None and time.monotonic() < deadline, "ended before the kill"
            time.sleep(0.5)
            with contextlib.suppress(OSError):  # not written yet
                s3_download(s3, f"{prefix}/tune/study.db", seen)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray die at once
        driver.wait()
        killed_at = time.time()
        killed = s3_download(s3, prefix, tmp_path / "killed")
        before = _finished_trials(killed / "tune" / "study.db")
        assert 2 <= len(before) < 6
        assert (killed / "config.json").is_file()
        assert not (killed / "trials.parquet").exists()  # the search never finished on head 1
        shutil.rmtree(first)  # that machine is gone

        env = {**os.environ, **s3, "MEDTUNE_CACHE": str(second)}
        resumed_at = time.time()
        result = search(*args, "--resume", env=env)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert f"submission: s3://{prefix}/submission/test_predictions.csv" in result.stdout
        reproduced = subprocess.run(
            [sys.executable, "-m", "search.reproduce", f"s3://{prefix}/best/config.json"],
            env=env, capture_output=True, text=True, timeout=600)
        assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
        run = s3_download(s3, prefix, tmp_path / "copy" / "obj")  # the study is named obj
    check_resumed(run, before, logs_may_lag=True)
    # the cost ledger counts a trial's training time, not the time no driver was running: no
    # trial held its CPU longer than it ran, and one that ran across the kill (when its table
    # rows say so: Ray may restore a restarted trial's log without its first session) held it
    # less than its span less that pause (Ray's timestamps are whole seconds)
    trials = pd.read_parquet(run / "trials.parquet")
    cpus = json.loads((run / "config.json").read_text())["settings"]["cpus_per_trial"]
    held = trials["cpu_hours"] * 3600 / cpus
    span = trials["finished"] - trials["started"]
    assert (held > 0).all() and (held < span + 2).all(), trials
    across = (trials["started"] < killed_at) & (trials["finished"] > resumed_at)
    assert (held[across] < span[across] - (resumed_at - killed_at) + 2).all(), trials[across]
    assert len(pd.read_csv(run / "submission" / "test_predictions.csv")) == 8
    assert len(list((run / "final").glob("member_*/model.safetensors"))) == 3
    assert (run / "report" / "index.html").is_file()
    assert list((run / "reproduce").glob("*/reproduce.json"))


@pytest.mark.slow
def test_a_store_that_fails_under_a_search_stops_it_in_one_line_and_resume_finishes(
        course_demo: Path, tmp_path: Path) -> None:
    """--results URI: the store goes away under a running search (its folder replaced by a
    file): the search stops at once with one line (exit 2) naming the store, where the files
    are kept and the --resume command; once the store is back, --resume runs every trial."""
    bucket = (tmp_path / "bucket").as_uri()
    args = ["deepdrid_finetune", "--data", str(course_demo), "--results", bucket, "--name", "gone",
            "--num-samples", "4", "--max-epochs", "2", "--no-wandb", "--no-final",
            "--set", "batch_size=8", *TINY]
    env = {**os.environ, "MEDTUNE_CACHE": str(tmp_path / "head")}
    said = tmp_path / "search.log"
    with open(said, "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "search.run", *args], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while not re.search(r"trial \w+ epoch 1:", said.read_text()):
            assert driver.poll() is None and time.monotonic() < deadline, said.read_text()[-3000:]
            time.sleep(0.2)
        (tmp_path / "bucket").rename(tmp_path / "bucket.away")  # the store goes away
        (tmp_path / "bucket").write_text("not a bucket any more")
        code = driver.wait(timeout=600)
    text = said.read_text()
    assert code == 2 and "Traceback" not in text, text[-3000:]
    assert (f"error: the search stopped: its results store failed (cannot write {bucket}/"
            "deepdrid_finetune/gone") in text
    assert f"this run's files are kept in {tmp_path / 'head' / 'runs'}" in text
    assert (f"once the store is back, python -m search.run deepdrid_finetune --results {bucket} "
            "--name gone --resume") in text
    (tmp_path / "bucket").unlink()
    (tmp_path / "bucket.away").rename(tmp_path / "bucket")  # it is back
    result = subprocess.run([sys.executable, "-m", "search.run", *args, "--resume"], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "bucket" / "deepdrid_finetune" / "gone" / "trials.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "stopped early"}, trials[["status", "error"]]


@pytest.mark.slow
def test_the_readmes_smoke_test_runs_the_plumbing_one_trial_at_a_time(tmp_path: Path) -> None:
    result = search("deepdrid_finetune", "--demo", "--smoke-test", "--max-concurrent", "1",
                    "--results", str(tmp_path), "--name", "smoke")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "deepdrid_finetune: 2 trials of up to 1 epochs, 1 at a time" in result.stdout
    run = tmp_path / "deepdrid_finetune" / "smoke"
    fixed = json.loads((run / "config.json").read_text())["settings"]["fixed"]
    assert (fixed["image_size"], fixed["max_train_batches"], fixed["max_eval_batches"]) == (64, 2, 2)
    assert fixed["weights"] == "bundled"  # the demo's offline ImageNet backbone
    trials = pd.read_parquet(run / "trials.parquet").sort_values("started")
    assert len(trials) == 2 and trials["epochs"].tolist() == [1, 1]
    first, second = trials.itertuples()
    assert second.started >= first.finished - 1  # one at a time (timestamps are whole seconds)
    assert (run / "submission" / "test_predictions.csv").is_file()

