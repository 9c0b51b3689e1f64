"""Reusable test helpers: generated data and tiny configs (no mocks: real files, real models)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainables.data.demo import DemoSpec, write_deepdrid_demo
from trainables.train.config import TrainConfig

TINY_SPEC = DemoSpec(train_patients=6, val_patients=3, test_patients=2, width=170, height=160,
                     seed=0)

# a search's trials (and final-step members) one at a time with both CPUs: a trial process that
# the next trial reuses, not two processes each importing torch and timm (about 7 CPU-s each)
ONE_AT_A_TIME = ("--cpus-per-trial", "2")


def make_demo(out: Path, layout: str, spec: DemoSpec = TINY_SPEC) -> Path:
    return write_deepdrid_demo(out, layout=layout, spec=spec)


def tiny_config(data: Path, **changes: Any) -> TrainConfig:
    """resnet18 from scratch at 64 px, two small batches: a trial in a second or two."""
    values: dict[str, Any] = {
        "data": str(data), "model": "resnet18", "weights": "none", "image_size": 64,
        "batch_size": 8, "epochs": 2, "lr": 1e-3, "max_train_batches": 2, "augment": "flip",
        "device": "cpu",
    }
    return TrainConfig.from_dict({**values, **changes})


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def plan_at(store: Any, *, max_epochs: int = 2) -> Any:
    """A deepdrid_finetune search plan (demo space) writing into `store`'s run folder."""
    from search.engine.driver import SearchPlan
    from spaces import get_experiment

    experiment = get_experiment("deepdrid_finetune")
    store.local.mkdir(parents=True, exist_ok=True)
    return SearchPlan(experiment=experiment, store=store,
                      fixed=experiment.config(demo=True).to_dict(), pinned={}, num_samples=4,
                      max_epochs=max_epochs, seed=0, cpus_per_trial=1, gpus_per_trial=0,
                      max_concurrent=2, wandb=False)


def searcher_of(plan: Any) -> Any:
    """The searcher `search.run` would give Ray Tune for `plan` (inside its concurrency limit)."""
    from search.engine.driver import make_searcher
    from search.engine.searcher import StudySearcher

    searcher = make_searcher(plan, startup_trials=2).searcher
    assert isinstance(searcher, StudySearcher)
    return searcher


def study_agrees_with_run_folder(run: Path) -> Any:
    """Opened with Optuna (as optuna-dashboard opens it), the study says what the run folder
    says: a trial per row of trials.parquet (its Ray trial id a user attribute), its epochs as
    intermediate values, a full-length trial COMPLETE with its best epoch's value, one ASHA
    stopped PRUNED, and best/config.json's trial as the study's best. Returns the study."""
    import optuna
    import pandas as pd
    import pytest

    listed = pd.read_parquet(run / "trials.parquet")
    trials = listed[listed["status"] != "prior"].set_index("trial_id")  # --warm-start's priors
    epochs = pd.read_parquet(run / "epochs.parquet")
    study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'study.db'}")
    metric = json.loads((run / "best" / "config.json").read_text())["metric"]
    # trials a killed driver left running that Ray's saved state did not know (an upload of
    # two saves mixed on a slow store: cluster/README.md) are marked failed, and not in the
    # tables: Ray never ran them again
    forgotten = [t for t in study.trials if t.user_attrs.get("left_running")
                 and t.user_attrs.get("ray_trial") not in trials.index]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in forgotten)
    own = [t for t in study.trials if not t.user_attrs.get("prior") and t not in forgotten]
    assert len(own) == len(trials)
    assert len(study.trials) - len(own) - len(forgotten) == len(listed) - len(trials)  # priors
    state = {"completed": optuna.trial.TrialState.COMPLETE,
             "stopped early": optuna.trial.TrialState.PRUNED,
             "failed": optuna.trial.TrialState.FAIL}
    for t in own:
        row = trials.loc[t.user_attrs["ray_trial"]]
        assert t.state == state[row["status"]], (t.number, row["status"])
        curve = epochs[epochs["trial_id"] == row.name]
        assert t.intermediate_values == pytest.approx(dict(zip(curve["epoch"], curve[metric],
                                                               strict=True)))
        if t.state == optuna.trial.TrialState.COMPLETE:  # its best epoch, not its last
            assert t.value == row[metric] == curve[metric].max()
    best = json.loads((run / "best" / "config.json").read_text())
    done = [t for t in own if t.state == optuna.trial.TrialState.COMPLETE]
    top = max(t.value for t in done) if best["mode"] == "max" else min(t.value for t in done)
    tied = {t.user_attrs["ray_trial"] for t in done if t.value == top}  # the study's best, but
    assert best["value"] == top and best["trial_id"] in tied  # for priors (ties: either)
    if len(own) + len(forgotten) == len(study.trials):
        assert study.best_value == top and study.best_trial.user_attrs["ray_trial"] in tied
    return study


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def logged_results(run: Path) -> dict[str, list[dict[str, Any]]]:
    """Every result Ray Tune logged, per trial id, from its raw result.json files (not the run
    folder's tables, which keep one row per epoch)."""
    return {log.parent.name.removeprefix("trial_"): [
        json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        for log in (run / "tune").glob("trial_*/result.json")}


@contextmanager
def s3_server(log: Path) -> Iterator[dict[str, str]]:
    """A real S3-protocol server on 127.0.0.1 (moto's server mode, its own process) that checks
    request signatures, with a user allowed s3:* and a bucket `medtune`: yields the environment
    a client of it needs (AWS_ENDPOINT_URL, the user's keys, the region). moto accepts the
    first three requests unsigned: the user, its policy and its key are made with those."""
    import boto3

    port = free_port()
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                   str(port)], stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        anon = {"endpoint_url": endpoint, "region_name": "us-east-1",
                "aws_access_key_id": "unsigned", "aws_secret_access_key": "unsigned"}
        iam = boto3.client("iam", **anon)
        iam.create_user(UserName="medtune")
        iam.put_user_policy(UserName="medtune", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="medtune")["AccessKey"]
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket="medtune")
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def s3_download(env: dict[str, str], prefix: str, target: Path) -> Path:
    """Copy s3://PREFIX, a file or everything under it, to `target` (pyarrow, with `env`'s
    endpoint and keys)."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                           endpoint_override=env["AWS_ENDPOINT_URL"], region=env["AWS_DEFAULT_REGION"])
    kind = fs.get_file_info(prefix).type
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(f"s3://{prefix}")
    if kind == pafs.FileType.File:
        target.parent.mkdir(parents=True, exist_ok=True)
    else:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
    pafs.copy_files(prefix, str(target), source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())
    return target


def dashboard_reads(command: str, log: Path) -> dict[str, Any]:
    """Runs the optuna-dashboard command a search printed (on 127.0.0.1, a free port) and
    returns what its HTTP API says of the study: /api/studies/<id> (name, directions,
    user_attrs, trials, best_trials)."""
    import shlex
    import urllib.request

    port = free_port()
    with open(log, "w") as out:
        server = subprocess.Popen([*shlex.split(command), "--host", "127.0.0.1", "--port",
                                   str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        assert len(studies) == 1, studies
        with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}") as r:
            detail: dict[str, Any] = json.load(r)
        return detail
    finally:
        server.terminate()
        server.wait(timeout=30)


def without_packages(folder: Path, *names: str) -> dict[str, str]:
    """An environment in which every Python started cannot import `names` (as on a machine
    without them: a ModuleNotFoundError naming the module), through a sitecustomize.py that
    this writes into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(f"""import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {names!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Missing())
""")
    return {**os.environ, "PYTHONPATH": str(folder)}
