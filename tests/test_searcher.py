"""medtune's searcher on Ray Tune's public Searcher interface and Optuna's ask-and-tell: what the
study holds, and a restore that reopens it where the restoring driver keeps it. Called as Ray
Tune calls it (every result but the last through on_trial_result, the last through
on_trial_complete); a real search is in test_search.py."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from ray import tune
from ray.tune.search import Searcher

from search.engine.binding import Binding, DriverCallbacks, bound_to
from search.engine.spec import RunSpec
from search.engine.storage import RunStore
from tests.helpers import plan_at, searcher_of
from trainables.errors import ConfigError

State = optuna.trial.TrialState


def run_trial(searcher: Any, trial_id: str, values: list[float], *, epochs: int,
              error: bool = False, first: int = 1) -> None:
    """Report `values` as epochs first.. of a trial `epochs` long, as Ray Tune does."""
    config = {"epochs": epochs}
    results = [{searcher.metric: v, "epoch": e, "training_iteration": e, "config": config}
               for e, v in enumerate(values, first)]
    for result in results[:-1]:
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, results[-1] if results else None, error=error)


def test_the_study_holds_epochs_stops_failures_and_the_best_epoch(tmp_path: Path) -> None:
    plan = dataclasses.replace(plan_at(RunStore(tmp_path / "deepdrid_finetune" / "r1"),
                                       max_epochs=3), num_samples=5)
    searcher = searcher_of(plan)
    for trial_id in ("full", "stopped", "failed", "silent", "short"):
        config = searcher.suggest(trial_id)
        assert config is not None and {"lr", "augment"} <= set(config)
    run_trial(searcher, "full", [0.5, 0.8, 0.6], epochs=3)  # its best epoch is not its last
    run_trial(searcher, "stopped", [0.9], epochs=3)  # ASHA stopped it after epoch 1
    run_trial(searcher, "failed", [0.7, float("nan")], epochs=3, error=True)
    searcher.on_trial_complete("silent", None)  # ended before any result
    run_trial(searcher, "short", [0.3, 0.4], epochs=2)  # its own length is 2 of the 3
    searcher.on_trial_complete("never suggested", {searcher.metric: 1.0})  # ignored

    study = optuna.load_study(study_name="r1", storage=plan.storage_url)
    got = {t.user_attrs["ray_trial"]: t for t in study.trials}
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert (got["full"].state, got["full"].value) == (State.COMPLETE, 0.8)
    assert got["full"].intermediate_values == {1: 0.5, 2: 0.8, 3: 0.6}
    assert got["stopped"].state == State.PRUNED
    assert got["stopped"].intermediate_values == {1: 0.9}
    assert got["failed"].state == State.FAIL
    assert got["failed"].intermediate_values == {1: 0.7}  # a NaN epoch is not a value
    assert got["silent"].state == State.FAIL
    assert (got["short"].state, got["short"].value) == (State.COMPLETE, 0.4)
    # the stopped trial's 0.9 is higher, but only a full-length trial can be the best
    assert study.best_trial.user_attrs["ray_trial"] == "full"


def test_a_restored_searcher_reopens_the_study_where_the_driver_keeps_it(tmp_path: Path) -> None:
    plan = plan_at(RunStore(tmp_path / "old" / "deepdrid_finetune" / "r1"))
    searcher = searcher_of(plan)
    searcher.suggest("t1")
    searcher.suggest("t2")
    run_trial(searcher, "t1", [0.4, 0.5], epochs=2)
    searcher.on_trial_result("t2", {searcher.metric: 0.6, "epoch": 1})  # running at the kill
    searcher.save(str(tmp_path / "searcher.pkl"))
    unpickled = pickle.loads(pickle.dumps(searcher))  # as in tuner.pkl: no connection inside
    # with no driver bound (Ray Client runs the Tuner elsewhere): the URL it saved
    unbound = pickle.loads(pickle.dumps(searcher))
    unbound.restore(str(tmp_path / "searcher.pkl"))
    assert unbound.study_url == plan.storage_url and unbound.numbers == {"t1": 0, "t2": 1}

    # the run folder moves (or is staged on another machine); the old one is gone
    moved = plan_at(RunStore(tmp_path / "new" / "deepdrid_finetune" / "r1"))
    shutil.copyfile(plan.run_dir / "study.db", moved.run_dir / "study.db")
    shutil.rmtree(tmp_path / "old")
    with bound_to("r1", Binding(moved.storage_url)):
        unpickled.restore(str(tmp_path / "searcher.pkl"))
    run_trial(unpickled, "t2", [0.7], epochs=2, first=2)  # its second epoch, after the resume
    assert unpickled.suggest("t3") is not None  # the restored sampler goes on
    assert not (tmp_path / "old").exists()

    study = optuna.load_study(study_name="r1", storage=moved.storage_url)
    assert [(t.state, t.value) for t in study.trials[:2]] == [(State.COMPLETE, 0.5),
                                                              (State.COMPLETE, 0.7)]
    assert study.trials[1].intermediate_values == {1: 0.6, 2: 0.7}
    assert [t.state for t in study.trials[2:]] == [State.RUNNING]
    with pytest.raises(ConfigError, match=r"the study r1 is not in .*/old/"):  # gone now
        unbound.restore(str(tmp_path / "searcher.pkl"))


def test_a_search_restored_from_a_mixed_state_follows_rays_trials(tmp_path: Path) -> None:
    """Ray saves its trial list, its count of trials created, the concurrency limiter's live
    trials and this searcher's state together, and uploads them file by file while the next
    save may be written: a driver killed then left on S3 a trial list newer than the rest
    (4 trials: 3 ended, 1 running; the limiter and searcher knew 2, both live). Restored, the
    search waited forever for the 2 "live" trials, and Ray would have made 8 trials of 6. Now
    the limiter follows Ray's statuses, the searcher takes the trials the study lists, and no
    more trials than planned are made."""
    from ray.tune.experiment import Trial

    from search.engine.driver import make_searcher

    plan = dataclasses.replace(plan_at(RunStore(tmp_path / "deepdrid_finetune" / "r1")),
                               num_samples=6)  # 2 at a time
    limiter = make_searcher(plan, startup_trials=2)
    searcher = limiter.searcher
    for trial in ("t1", "t2"):
        assert limiter.suggest(trial) is not None
    searcher.save(str(tmp_path / "stale.pkl"))
    stale_limiter = pickle.loads(pickle.dumps(limiter.get_state()))
    run_trial(limiter, "t1", [0.4, 0.5], epochs=2)
    run_trial(limiter, "t2", [0.3, 0.2], epochs=2)
    assert limiter.suggest("t3") is not None and limiter.suggest("t4") is not None
    run_trial(limiter, "t4", [0.6, 0.7], epochs=2)

    # a driver on another machine: Ray's newer list of 4 trials, the older limiter and searcher
    restored = pickle.loads(pickle.dumps(limiter))
    restored.set_state(stale_limiter)
    assert restored.live_trials == {"t1", "t2"}
    with bound_to("r1", Binding(plan.storage_url)):
        restored.searcher.restore(str(tmp_path / "stale.pkl"))
    assert restored.searcher.numbers == {"t1": 0, "t2": 1, "t3": 2, "t4": 3}  # from the study

    trials = []
    for trial_id, status in (("t1", Trial.TERMINATED), ("t2", Trial.TERMINATED),
                             ("t3", Trial.RUNNING), ("t4", Trial.TERMINATED)):
        trial = Trial("__fake", stub=True, trial_id=trial_id)
        trial.set_status(status)
        trials.append(trial)
    relay = DriverCallbacks("r1", [])
    relay.on_step_begin(iteration=1, trials=trials)  # what Ray's controller does each step
    assert restored.suggest("t6") is not None  # t1, t2 ended: t3 and now t6 run
    assert restored.live_trials == {"t3", "t6"}
    assert restored.suggest("t7") is None  # 2 at a time
    run_trial(restored, "t3", [0.5, 0.6], epochs=2)  # it reaches the study
    trials[2].set_status(Trial.TERMINATED)
    relay.on_step_begin(iteration=2, trials=[*trials, Trial("__fake", stub=True, trial_id="t6")])
    assert restored.suggest("t7") is not None  # below the limit again: the 6th trial
    assert restored.suggest("t8") == Searcher.FINISHED
    study = optuna.load_study(study_name="r1", storage=plan.storage_url)
    states = {t.user_attrs["ray_trial"]: t.state for t in study.trials}
    assert states["t3"] == State.COMPLETE and states["t4"] == State.COMPLETE


class Seen(tune.Callback):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.restored: dict | None = None

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self.events.append(f"result {result['epoch']}")

    def get_state(self) -> dict | None:
        return {"seen": len(self.events)}

    def set_state(self, state: dict) -> None:
        self.restored = state


def test_restored_callbacks_relay_to_the_drivers_own() -> None:
    started = Seen()
    relay = pickle.loads(pickle.dumps(DriverCallbacks("r1", [started, Seen()])))  # tuner.pkl
    relay.on_trial_result(iteration=1, trials=[], trial=None, result={"epoch": 1})
    assert [cb.events for cb in relay.own] == [["result 1"], ["result 1"]]  # none bound
    saved = relay.get_state()
    assert saved == {0: {"seen": 1}, 1: {"seen": 1}}

    mine = [Seen(), Seen()]  # this driver's callbacks, bound while it fits
    with bound_to("r1", Binding("sqlite://", callbacks=mine)):
        relay.set_state(saved)
        relay.on_trial_result(iteration=2, trials=[], trial=None, result={"epoch": 2})
    assert [cb.events for cb in mine] == [["result 2"], ["result 2"]]
    assert [cb.restored for cb in mine] == [{"seen": 1}, {"seen": 1}]
    assert [cb.events for cb in relay.own] == [["result 1"], ["result 1"]]
    assert started.events == []  # the pickled copy, not the object it was made from


def test_an_earlier_trial_is_fitted_to_todays_space_or_left_out() -> None:
    from search.engine.warmstart import FittingTrial, _Drop

    def space(trial: Any) -> None:  # deepdrid_attention's shape: a condition on a choice
        trial.suggest_float("lr", 1e-4, 3e-3, log=True)
        trial.suggest_int("epochs", 2, 6, step=2)
        if trial.suggest_categorical("attention", [True, False]):
            trial.suggest_categorical("heads", [1, 2, 4])

    fitted = FittingTrial({"lr": 1e-2, "epochs": 7, "attention": True, "heads": 2, "old": 1}, {})
    space(fitted)
    assert fitted.params == {"lr": 3e-3, "epochs": 6, "attention": True, "heads": 2}
    assert fitted.clipped == ["lr 0.01 -> 0.003", "epochs 7 -> 6"]
    assert set(fitted.distributions) == {"lr", "epochs", "attention", "heads"}
    off = FittingTrial({"lr": 1e-3, "epochs": 4, "attention": False}, {"heads": 8})
    space(off)  # its branch asks no heads; a pinned key is answered, not searched
    assert off.params == {"lr": 1e-3, "epochs": 4, "attention": False} and off.clipped == []
    for params, why in (({"lr": 1e-3, "epochs": 4, "attention": True, "heads": 8},
                         "heads=8 is not one of today's choices"),
                        ({"epochs": 4, "attention": False}, "it has no lr")):
        with pytest.raises(_Drop, match=why):
            space(FittingTrial(params, {}))


def test_asha_on_the_study_counts_comparable_priors_and_earlier_batches(tmp_path: Path) -> None:
    from search.engine.study_asha import StudyASHA

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="r1", storage=url, direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def add(value: float, **attrs: Any) -> None:
        study.add_trial(optuna.trial.create_trial(
            params={"x": value}, distributions=dist, value=value,
            intermediate_values={1: value, 2: value}, user_attrs=attrs))

    for v in (0.1, 0.2, 0.3):  # an earlier run's trials on the same data and epochs
        add(v, prior="e/r0/1", prior_comparable=True)
    add(0.9, prior="other/r1/0", prior_comparable=False)  # other data: its curves do not count
    for i, v in enumerate((0.5, 0.6, 0.7, 0.8)):  # this run's
        add(v, ray_trial=f"t{i}")

    def asha(batch: int | None) -> StudyASHA:
        return StudyASHA(metric="val/kappa", mode="max", max_t=4, grace_period=1,
                         reduction_factor=2, study_name="r1", study_url=url, batch=batch)

    free, batches = asha(None), asha(2)
    assert free.rungs == [1, 2, 4]
    assert free.cutoff("t0", 2) == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.6, 0.7, 0.8], 50))
    # in batches of 2: t2 and t3 are compared with the priors and t0, t1 only; t0 with priors
    assert batches.cutoff("t3", 2) == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.5, 0.6], 50))
    assert batches.cutoff("t0", 1) == pytest.approx(0.2)  # the first trial has a cutoff too
    assert free.cutoff("unknown", 2) is None
    stop = free.on_trial_result(None, type("T", (), {"trial_id": "t0"})(),
                                {"val/kappa": 0.15, "epoch": 1})
    assert stop == "STOP"  # below the priors' median at the first rung


TWO = (("val/kappa", "max"), ("val/loss", "min"))  # --objectives val/kappa,val/loss


def run_two(searcher: Any, trial_id: str, epochs: list[tuple[float, float]], *,
            length: int = 3, running: bool = False) -> None:
    """Report (QWK, loss) epochs of a trial `length` long on two objectives, as Ray Tune does;
    `running`: it has not ended yet."""
    results = [{"val/kappa": k, "val/loss": loss, "epoch": e, "training_iteration": e,
                "config": {"epochs": length}} for e, (k, loss) in enumerate(epochs, 1)]
    for result in results if running else results[:-1]:
        searcher.on_trial_result(trial_id, result)
    if not running:
        searcher.on_trial_complete(trial_id, results[-1])


def test_a_multi_objective_study_holds_each_epoch_as_it_comes_and_asha_reads_it(
        tmp_path: Path) -> None:
    """A study on several objectives holds no intermediate values: each epoch goes to the
    trial's user attribute `curve` as it comes, and ASHA on the study (--reproducible,
    --warm-start) reads a finished or running trial's rung values from there."""
    from search.engine.study_asha import StudyASHA

    plan = dataclasses.replace(plan_at(RunStore(tmp_path / "deepdrid_finetune" / "r1"),
                                       max_epochs=3), objectives=TWO, batch=2)
    searcher = searcher_of(plan)
    assert searcher.suggest("a") and searcher.suggest("b")
    assert searcher.suggest("c") is None  # the first batch has not ended
    study = optuna.load_study(study_name="r1", storage=plan.storage_url)
    run_two(searcher, "a", [(0.2, 1.0), (0.6, 0.7)], running=True)
    assert study.trials[0].user_attrs["curve"] == {"1": 0.2, "2": 0.6}  # while it runs
    run_two(searcher, "a", [(0.2, 1.0), (0.6, 0.7), (0.5, 0.6)])
    run_two(searcher, "b", [(0.4, 0.9)])  # ASHA stopped it after epoch 1
    got = {t.user_attrs["ray_trial"]: t for t in study.trials}
    assert (got["a"].state, got["a"].values) == (State.COMPLETE, [0.6, 0.7])  # its best epoch
    assert got["a"].user_attrs["curve"] == {"1": 0.2, "2": 0.6, "3": 0.5}
    assert (got["b"].state, got["b"].values, got["b"].user_attrs["curve"]) == \
        (State.PRUNED, None, {"1": 0.4})
    assert not got["a"].intermediate_values
    assert searcher.suggest("c") and searcher.suggest("d")  # the second batch
    run_two(searcher, "d", [(0.9, 0.3)], running=True)

    def asha(batch: int | None) -> StudyASHA:
        return StudyASHA(metric="val/kappa", mode="max", max_t=3, grace_period=1,
                         reduction_factor=2, study_name="r1", study_url=plan.storage_url,
                         batch=batch)

    assert asha(2).cutoff("c", 1) == pytest.approx(0.3)  # the first batch's 0.2 and 0.4 only
    assert asha(None).cutoff("c", 1) == pytest.approx(0.4)  # and the running d's 0.9
    assert asha(2).cutoff("c", 2) == pytest.approx(0.6)  # a's alone reached epoch 2


def earlier_run(results: Path, name: str, objectives: tuple[tuple[str, str], ...]) -> Path:
    """A finished earlier search on deepdrid_finetune's demo (3 epochs): a full-length trial
    whose best epoch is its second, and one ASHA stopped after its first."""
    plan = dataclasses.replace(plan_at(RunStore(results / "deepdrid_finetune" / name),
                                       max_epochs=3), objectives=objectives)
    searcher = searcher_of(plan)
    searcher.suggest("full")
    searcher.suggest("stopped")
    if objectives:
        run_two(searcher, "full", [(0.2, 1.0), (0.6, 0.7), (0.5, 0.6)])
        run_two(searcher, "stopped", [(0.4, 0.9)])
    else:
        run_trial(searcher, "full", [0.2, 0.6, 0.5], epochs=3)
        run_trial(searcher, "stopped", [0.4], epochs=3)
    (plan.run_dir / "config.json").write_text(json.dumps({
        "experiment": "deepdrid_finetune", "run_id": name,
        "settings": RunSpec(fixed=plan.fixed, num_samples=2, max_epochs=3, cpus_per_trial=1,
                            startup_trials=1, grace_period=1, reduction_factor=2, cache_dir="",
                            objectives=[list(o) for o in objectives]).to_dict()}))
    return plan.run_dir


def test_a_warm_start_into_several_objectives_takes_values_only_from_the_same_objectives(
        tmp_path: Path) -> None:
    from search.engine.searcher import make_sampler
    from search.engine.warmstart import prior_rows, warm_start

    two = earlier_run(tmp_path / "old", "two", TWO)
    one = earlier_run(tmp_path / "old", "one", ())
    plan = dataclasses.replace(plan_at(RunStore(tmp_path / "deepdrid_finetune" / "r2"),
                                       max_epochs=3), objectives=TWO)
    study = optuna.create_study(study_name="r2", storage=plan.storage_url,
                                directions=["maximize", "minimize"],
                                sampler=make_sampler(0, startup_trials=1))
    warmed = warm_start(study, [str(two), str(one)], space=plan.experiment.search_space(True),
                        pinned={}, experiment="deepdrid_finetune", metric="val/kappa",
                        mode="max", fixed=plan.fixed, max_epochs=3, first=3,
                        objectives=[list(o) for o in TWO])
    old_two = optuna.load_study(study_name="two", storage=f"sqlite:///{two / 'study.db'}")
    old_one = optuna.load_study(study_name="one", storage=f"sqlite:///{one / 'study.db'}")
    priors = {t.user_attrs["prior"]: t for t in study.trials if "prior" in t.user_attrs}
    assert set(priors) == {"deepdrid_finetune/two/0", "deepdrid_finetune/two/1",
                           "deepdrid_finetune/one/1"}
    full, stopped = priors["deepdrid_finetune/two/0"], priors["deepdrid_finetune/one/1"]
    assert (full.state, full.values, full.user_attrs["curve"]) == \
        (State.COMPLETE, [0.6, 0.7], {"1": 0.2, "2": 0.6, "3": 0.5})
    assert (stopped.state, stopped.user_attrs["curve"], stopped.intermediate_values) == \
        (State.PRUNED, {"1": 0.4}, {})
    assert full.params == old_two.trials[0].params
    # the single-objective run's full-length trial never measured val/loss: not a prior, but
    # its configuration runs first (no other configuration of another run may)
    assert "warm start: 1 trial(s) of deepdrid_finetune/one added as priors (same experiment, " \
        "data and epochs: their curves count in ASHA's cutoffs); 1 full-length one(s) left " \
        "out" in "\n".join(warmed.lines)
    assert [f["params"] for f in warmed.first] == [old_one.trials[0].params]
    space = plan.experiment.search_space(True)
    asked = study.ask()
    space(asked)
    assert asked.params == old_one.trials[0].params
    study.tell(asked, [0.5, 0.8])
    space(study.ask())  # and the multi-objective TPE models the priors, pruned ones too
    rows = {r["prior_of"]: r for r in prior_rows(plan.storage_url, "r2", ["lr"], "val/kappa",
                                                 "max", ["val/kappa", "val/loss"])}
    assert (rows["deepdrid_finetune/two/0"]["val/loss"], rows["deepdrid_finetune/two/0"][
        "val/kappa"], rows["deepdrid_finetune/two/0"]["best_epoch"]) == (0.7, 0.6, 2)
    # the other way: a single-objective search takes a multi-objective run's curves
    single = optuna.create_study(study_name="r3", storage=plan.storage_url,
                                 direction="maximize")
    warm_start(single, [str(two)], space=plan.experiment.search_space(True), pinned={},
               experiment="deepdrid_finetune", metric="val/kappa", mode="max", fixed=plan.fixed,
               max_epochs=3, first=3)
    assert [(t.state, t.value, t.intermediate_values) for t in single.trials] == [
        (State.COMPLETE, 0.6, {1: 0.2, 2: 0.6, 3: 0.5}), (State.PRUNED, None, {1: 0.4})]


def test_a_warm_starts_priors_go_to_wandb_as_one_table_run(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from search.engine.warmstart import Warmed, log_priors

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    warmed = Warmed(priors=[{"prior_of": "e/r0/3", "lr": 0.01, "status": "prior",
                             "val/kappa": 0.5}],
                    first=[{"params": {"lr": 0.01}, "val/kappa": 0.5}])
    assert log_priors(tmp_path, "r1", warmed, online=False) == \
        "W&B: the 1 prior trial(s) logged as run r1-priors"
    [table] = tmp_path.glob("wandb/offline-run-*/files/media/table/priors/trials_*.table.json")
    logged = json.loads(table.read_text())
    assert logged["columns"] == ["prior_of", "lr", "status", "val/kappa"]
    assert logged["data"] == [["e/r0/3", "0.01", "prior", "0.5"]]
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/table/priors/tried_first_*"))
