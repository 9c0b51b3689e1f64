"""Run folders on object stores (staged locally, copied with pyarrow), and the study that travels
with Ray's experiment state. `file://` URIs stand in for s3:// here: both go through pyarrow's
file systems."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest

from search.engine.storage import RunStore, latest_run, snapshot_sqlite, stage_root
from tests.helpers import plan_at, searcher_of
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
