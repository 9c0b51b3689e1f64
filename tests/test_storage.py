"""Run folders on object stores (staged locally, copied with pyarrow), and the study that travels
with Ray's experiment state. Most tests use `file://` URIs (the same pyarrow code); one runs on a
real S3-protocol server (moto's server mode), as does test_search_e2e's SIGKILL test."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search.engine.storage import RunStore, latest_run, snapshot_sqlite, stage_root
from tests.helpers import plan_at, s3_server, searcher_of
from trainables.errors import ConfigError, StorageError


def test_a_folder_is_its_own_run_folder_and_a_uri_is_staged(tmp_path: Path) -> None:
    folder = RunStore.at(str(tmp_path), "deepdrid_finetune", "r1")
    assert folder.uri is None and folder.local == tmp_path / "deepdrid_finetune" / "r1"
    assert folder.tune_storage == str(folder.local.resolve()) and folder.results == str(tmp_path)
    assert RunStore.of(folder.local) == folder

    bucket = (tmp_path / "bucket").as_uri()
    staged = RunStore.at(bucket + "/", "deepdrid_finetune", "r1")
    assert staged.uri == f"{bucket}/deepdrid_finetune/r1" == staged.location == staged.tune_storage
    assert staged.local == stage_root() / "deepdrid_finetune" / "r1"
    assert staged.results == bucket and staged.run_id == "r1"
    assert RunStore.of(staged.uri + "/") == staged
    assert not staged.exists()


def test_a_uri_pyarrow_cannot_open_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="nosuch://bucket/x: not a storage URI"):
        RunStore.at("nosuch://bucket/x", "deepdrid_finetune", "r1")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_push_and_pull_copy_the_run_folder_but_not_tune(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    store = RunStore.at(bucket.as_uri(), "deepdrid_finetune", "r1")
    _write(store.local / "config.json", "{}")
    _write(store.local / "best" / "top_k.json", "[1]")
    _write(store.local / "tune" / "local-only", "Ray writes tune/ to the URI itself")
    store.push()
    remote = bucket / "deepdrid_finetune" / "r1"
    assert (remote / "config.json").read_text() == "{}"
    assert (remote / "best" / "top_k.json").read_text() == "[1]"
    assert not (remote / "tune").exists() and store.exists()

    _write(store.local / "best" / "top_k.json", "[2]")
    _write(store.local / "config.json", "changed")
    store.push("best")  # only what is named
    assert (remote / "best" / "top_k.json").read_text() == "[2]"
    assert (remote / "config.json").read_text() == "{}"

    # another machine: no stage; the study snapshot saved with Ray's state becomes study.db
    _write(remote / "tune" / "study.db", "snapshot")
    shutil.rmtree(store.local)
    store.pull()
    assert (store.local / "config.json").read_text() == "{}"
    assert (store.local / "best" / "top_k.json").read_text() == "[2]"
    assert (store.local / "study.db").read_text() == "snapshot"
    assert not (store.local / "tune").exists()


def test_pulling_a_run_that_is_not_there_says_so(tmp_path: Path) -> None:
    store = RunStore.at((tmp_path / "bucket").as_uri(), "deepdrid_finetune", "nope")
    with pytest.raises(ConfigError, match="deepdrid_finetune/nope: no run folder there"):
        store.pull()


def test_a_store_that_cannot_be_written_is_one_line_and_the_stage_is_kept(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the bucket's folder would be")
    store = RunStore.at((tmp_path / "blocker" / "bucket").as_uri(), "deepdrid_finetune", "r1")
    _write(store.local / "config.json", "{}")
    with pytest.raises(StorageError, match=r"cannot write file://.*/blocker/bucket/deepdrid_finetune/r1: .*"
                                           r"this run's files are kept in .*/runs/deepdrid_finetune/r1"):
        store.push()
    assert (store.local / "config.json").is_file()


def test_on_a_real_s3_server_a_run_folder_travels_and_a_missing_bucket_or_bad_key_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow's S3 client against an S3-protocol server that checks signatures: push and pull
    a run folder (not tune/); `search.run` refuses a bucket that does not exist and keys the
    store refuses, each in one line before anything runs."""
    with s3_server(tmp_path / "moto.log") as s3:
        for name, value in s3.items():
            monkeypatch.setenv(name, value)
        store = RunStore.at("s3://medtune/runs", "deepdrid_finetune", "on-s3")
        assert store.uri == "s3://medtune/runs/deepdrid_finetune/on-s3" and not store.exists()
        _write(store.local / "config.json", "{}")
        _write(store.local / "best" / "top_k.json", "[1]")
        _write(store.local / "tune" / "local-only", "Ray writes tune/ itself")
        store.push()
        store.probe()
        assert store.exists() and set(store.sizes()) == {"config.json", "best/"}
        shutil.rmtree(store.local)  # another machine
        store.pull()
        assert (store.local / "best" / "top_k.json").read_text() == "[1]"
        assert not (store.local / "tune").exists()
        assert latest_run("s3://medtune/runs", "deepdrid_finetune") == "on-s3"

        def search(results: str, **env: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "search.run", "deepdrid_finetune",
                                   "--results", results, "--name", "r2", "--no-wandb"],
                                  capture_output=True, text=True, timeout=120,
                                  env={**os.environ, **env})

        missing = search("s3://nobucket/runs")
        assert missing.returncode == 2 and missing.stdout == "", missing.stderr
        assert missing.stderr == ("error: cannot write s3://nobucket/runs/deepdrid_finetune/r2: "
                                  "the bucket 'nobucket' does not exist: create it first "
                                  "(aws s3 mb s3://nobucket)\n")
        refused = search("s3://medtune/runs", AWS_SECRET_ACCESS_KEY="not-the-key")
        assert refused.returncode == 2 and refused.stdout == "", refused.stderr
        assert refused.stderr.startswith("error: cannot read s3://medtune/runs/deepdrid_finetune/"
                                         "r2: the store refused this machine's credentials (")
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr


def test_latest_run_in_a_folder_and_under_a_uri(tmp_path: Path) -> None:
    for i, name in enumerate(["b-older", "a-newer"]):
        config = tmp_path / "deepdrid_finetune" / name / "config.json"
        _write(config, "{}")
        os.utime(config, (1_000_000 + i, 1_000_000 + i))
    _write(tmp_path / "deepdrid_finetune" / "no-config" / "x", "")
    assert latest_run(str(tmp_path), "deepdrid_finetune") == "a-newer"
    assert latest_run(tmp_path.as_uri(), "deepdrid_finetune") == "a-newer"
    with pytest.raises(ConfigError, match="no run of this experiment"):
        latest_run(str(tmp_path), "deepdrid_attention")


def test_a_sqlite_snapshot_holds_what_was_committed(tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    writer = sqlite3.connect(db)
    writer.execute("create table t (x)")
    writer.execute("insert into t values (1)")
    writer.commit()
    writer.execute("insert into t values (2)")  # an open transaction: not in the snapshot
    snapshot_sqlite(db, tmp_path / "copy.db")
    writer.close()
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("select x from t").fetchall() == [(1,)]


def test_a_staged_study_is_saved_beside_the_searcher_state(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDTUNE_STUDY_URL", raising=False)
    store = RunStore(tmp_path / "stage" / "deepdrid_finetune" / "r1",
                     (tmp_path / "bucket").as_uri() + "/deepdrid_finetune/r1")
    plan = plan_at(store)
    searcher = searcher_of(plan)
    assert searcher.snapshot == store.local / "study.db"
    searcher.suggest("t1")
    ray_state = tmp_path / "driver_artifacts"  # what Ray uploads to URI/tune
    ray_state.mkdir()
    searcher.save(str(ray_state / "searcher-state.pkl"))
    study = optuna.load_study(study_name="r1", storage=f"sqlite:///{ray_state / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]

    monkeypatch.setenv("MEDTUNE_STUDY_URL", f"sqlite:///{tmp_path / 'server.db'}")
    assert plan.staged_study is None  # a database server keeps the study: nothing to carry
