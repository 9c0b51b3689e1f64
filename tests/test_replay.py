"""The replay backend: a hand-made learning-curve table served through the real search
(search.run --replay: Optuna, Ray Tune, ASHA, the run folder), its simulated clock, and the
surrogate for configurations the table never saw; numbers worked out by hand."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import ray

from search.bench.cli import main as bench_main
from search.bench.replay import chunk_folder
from search.engine.curves import read_curves, write_curves
from search.engine.replay import fit_surrogate, held_out_error, landscape, simulated_times
from search.final import run_final
from search.run import main as run_main
from spaces import get_experiment
from tests.helpers import dashboard_reads, study_agrees_with_run_folder
from trainables.data.cache import cache_root
from trainables.errors import ConfigError

AUGMENTS = ["none", "flip", "flip+rotate", "flip+rotate+scale", "flip+rotate+scale+color"]
PINNED = {"lr": 0.001, "weight_decay": 0.0001, "batch_size": 32, "preprocess": "circle",
          "unfreeze_depth": "all", "label_smoothing": 0.1}
# a configuration per augmentation policy, the rest pinned: QWK by epoch, and its seconds
KAPPA = {"none": [0.30, 0.50, 0.55], "flip": [0.40, 0.45, 0.50], "flip+rotate": [0.20, 0.70, 0.90],
         "flip+rotate+scale": [0.60, 0.62, 0.64], "flip+rotate+scale+color": [0.10, 0.15, 0.20]}
SECONDS = {a: [3.0 + i, 1.0, 1.0 + i / 2] for i, a in enumerate(AUGMENTS)}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def space_json() -> dict[str, str]:
    """deepdrid_finetune's distributions, as the collector records them."""
    study = optuna.create_study()
    trial = study.ask()
    get_experiment("deepdrid_finetune").space(trial)  # type: ignore[misc]
    return {k: optuna.distributions.distribution_to_json(d) for k, d in trial.distributions.items()}


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = []
    for augment in AUGMENTS:
        params = json.dumps({**PINNED, "augment": augment}, sort_keys=True)
        for epoch in (1, 2, 3):
            k = KAPPA[augment][epoch - 1]
            rows.append({"config": f"c/{augment}", "params": params, "epoch": epoch,
                         "train/loss": 2 - k, "val/loss": 1.5 - k, "val/kappa": k,
                         "seconds": SECONDS[augment][epoch - 1]})
    fixed = get_experiment("deepdrid_finetune").config(demo=True, overrides={
        "data": "/nowhere", "num_classes": 5}).to_dict()
    path = tmp_path_factory.mktemp("curves") / "tiny.parquet"
    write_curves(path, pd.DataFrame(rows), {
        "experiment": "deepdrid_finetune", "metric": "val/kappa", "mode": "max",
        "task": "grading", "space": space_json(), "fixed": fixed, "max_epochs": 3,
        "configs": 5, "failed": []})
    return path


def replay(table: Path, results: Path, name: str, scheduler: str, samples: int) -> Path:
    sets = [a for k, v in PINNED.items() for a in ("--set", f"{k}={v}")]
    code = run_main(["deepdrid_finetune", "--replay", str(table), "--results", str(results),
                     "--name", name, "--sampler", "random", "--scheduler", scheduler,
                     "--num-samples", str(samples), "--max-concurrent", "1", "--no-wandb",
                     "--seed", "3", *sets])
    assert code == 0
    return results / "deepdrid_finetune" / name


def in_order(run: Path) -> tuple[pd.DataFrame, list[str]]:
    """The epochs, and the trials in the order they ran (one at a time)."""
    epochs = pd.read_parquet(run / "epochs.parquet").sort_values("sim/clock")
    return epochs, list(dict.fromkeys(epochs["trial_id"]))


def test_a_replayed_search_serves_the_recorded_curves(local_ray: None, table: Path,
                                                      tmp_path: Path) -> None:
    run = replay(table, tmp_path, "fifo", "fifo", 4)
    trials = pd.read_parquet(run / "trials.parquet").set_index("trial_id")
    epochs, order = in_order(run)
    assert len(order) == 4 and set(trials["status"]) == {"completed"}
    for trial_id, rows in epochs.groupby("trial_id"):
        augment = trials.loc[trial_id, "augment"]
        assert rows.sort_values("epoch")["val/kappa"].tolist() == pytest.approx(KAPPA[augment])
        assert rows.sort_values("epoch")["sim/epoch_seconds"].tolist() == SECONDS[augment]
        assert trials.loc[trial_id, "val/kappa"] == pytest.approx(max(KAPPA[augment]))
    best = json.loads((run / "best" / "config.json").read_text())
    assert best["value"] == pytest.approx(max(max(KAPPA[a]) for a in trials["augment"]))
    # one trial at a time: each epoch ends the recorded seconds after the one before it
    ends = simulated_times(epochs, workers=1)
    by_hand = np.cumsum([s for t in order for s in SECONDS[trials.loc[t, "augment"]]])
    assert ends.loc[epochs.index].tolist() == pytest.approx(by_hand.tolist())
    # two workers: the first two trials start at 0, the third when the first is done
    two = simulated_times(epochs, workers=2)
    first, second = (sum(SECONDS[trials.loc[t, "augment"]]) for t in order[:2])
    third = epochs[epochs["trial_id"] == order[2]].sort_values("epoch").index[0]
    assert two[third] == pytest.approx(min(first, second) + SECONDS[trials.loc[order[2],
                                                                              "augment"]][0])
    study = optuna.load_study(study_name="fifo", storage=f"sqlite:///{run / 'study.db'}")
    assert len(study.trials) == 4  # the real study, one Optuna trial per replayed one
    with pytest.raises(ConfigError, match=r"a replayed search .* nothing to retrain"):
        run_final(run)


def test_trials_whose_log_lags_their_state_keep_the_epochs_they_ran(
        local_ray: None, table: Path, tmp_path: Path) -> None:
    """Ray restores a trial's log from the store, where a killed driver's upload can leave a
    copy older than the trial's saved state (seen on S3: two ended trials with no epochs, the
    resumed search ended \"interrupted\" with 4 of 6 trials): the epochs come from the
    study and Ray's last result, and the tables are the ones the search wrote."""
    run = replay(table, tmp_path, "lag", "asha", 4)
    trials = pd.read_parquet(run / "trials.parquet").set_index("trial_id")
    logs = sorted((run / "tune").glob("trial_*/result.json"))
    assert len(logs) == 4
    (logs[0]).write_text("")  # no epoch logged
    lines = logs[1].read_text().splitlines(keepends=True)
    logs[1].write_text(lines[0])  # the first epoch only
    # Ray's other copies: progress.csv, and the driver's staging folder, which a driver on
    # another machine does not have
    staged = Path(ray._private.worker._global_node.get_session_dir_path()) / "artifacts"
    for log in logs[:2]:
        (log.parent / "progress.csv").unlink()
        for copy in staged.glob(f"*/tune/driver_artifacts/{log.parent.name}"):
            shutil.rmtree(copy)
    sets = [a for k, v in PINNED.items() for a in ("--set", f"{k}={v}")]
    assert run_main(["deepdrid_finetune", "--replay", str(table), "--results", str(tmp_path),
                     "--name", "lag", "--no-wandb", "--resume", *sets]) == 0
    again = pd.read_parquet(run / "trials.parquet").set_index("trial_id")
    columns = ["status", "val/kappa", "best_epoch", "epochs", "augment"]
    pd.testing.assert_frame_equal(again[columns], trials.loc[again.index, columns])
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id, rows in epochs.groupby("trial_id"):  # each epoch it ran, the recorded QWK
        recorded = KAPPA[again.loc[trial_id, "augment"]][:again.loc[trial_id, "epochs"]]
        assert rows.sort_values("epoch")["val/kappa"].tolist() == pytest.approx(recorded)


def test_asha_stops_replayed_trials_as_worked_out_by_hand(local_ray: None, table: Path,
                                                          tmp_path: Path) -> None:
    # deepdrid_finetune's budget: grace period 2, reduction factor 2, the table's 3 epochs:
    # one rung, at epoch 2. A trial goes on if its epoch-2 QWK is at least the median of
    # the epoch-2 values recorded there before it (ray's ASHA), the first one always
    run = replay(table, tmp_path, "asha", "asha", 5)
    trials = pd.read_parquet(run / "trials.parquet").set_index("trial_id")
    _, order = in_order(run)
    recorded: list[float] = []
    for trial_id in order:
        value = KAPPA[trials.loc[trial_id, "augment"]][1]
        stops = bool(recorded) and value < np.percentile(recorded, 50)
        recorded.append(value)
        assert trials.loc[trial_id, "status"] == ("stopped early" if stops else "completed"), \
            (trial_id, value, recorded)
        assert trials.loc[trial_id, "epochs"] == (2 if stops else 3)
    assert "stopped early" in set(trials["status"])  # this seed's draws put ASHA to work
    # the study says so too: stopped trials PRUNED with their epochs, the best one COMPLETE
    study = study_agrees_with_run_folder(run)
    assert optuna.trial.TrialState.PRUNED in {t.state for t in study.trials}


def reproducible_run(table: Path, results: Path, name: str, concurrency: int,
                     *more: str, samples: int = 10) -> Path:
    """A TPE + ASHA search (the demo budget: TPE models the space from the 5th trial on) of
    the augmentation, in batches of 2 (--reproducible 2): the recorded curves are served."""
    sets = [a for k, v in PINNED.items() for a in ("--set", f"{k}={v}")]
    code = run_main(["deepdrid_finetune", "--replay", str(table), "--results", str(results),
                     "--name", name, "--demo", "--max-epochs", "3", "--num-samples", str(samples),
                     "--max-concurrent", str(concurrency), "--reproducible", "2", "--no-wandb",
                     "--seed", "5", *sets, *more])
    assert code == 0
    return results / "deepdrid_finetune" / name


def test_a_reproducible_search_is_the_same_search_at_any_concurrency(
        local_ray: None, table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = reproducible_run(table, tmp_path, "one", 1)
    three = reproducible_run(table, tmp_path, "three", 3)
    assert "reproducible: 3 trial slot(s) stood idle" in capsys.readouterr().out

    def by_number(run: Path) -> list[tuple]:
        study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'study.db'}")
        return [(t.number, t.params, t.state, t.intermediate_values) for t in study.trials]

    first, second = by_number(one), by_number(three)
    assert len(first) == 10 and first == second  # the same configurations, stops and values
    assert optuna.trial.TrialState.PRUNED in {t[2] for t in first}  # ASHA stopped some
    # batches of 2 at concurrency 3: a batch starts once the one before it has ended
    trials = pd.read_parquet(three / "trials.parquet")
    epochs = pd.read_parquet(three / "epochs.parquet")
    study = optuna.load_study(study_name="three", storage=f"sqlite:///{three / 'study.db'}")
    number = {t.user_attrs["ray_trial"]: t.number for t in study.trials}
    clock = epochs.groupby("trial_id")["sim/clock"]
    for trial_id in trials["trial_id"]:
        earlier = [t for t, n in number.items() if n < number[trial_id] // 2 * 2]
        if earlier:
            assert clock.min()[trial_id] > max(clock.max()[t] for t in earlier)
    # no trial of the first batch is stopped: it has no earlier trials to be compared with
    first_batch = trials[trials["trial_id"].map(number) < 2]
    assert set(first_batch["status"]) == {"completed"}


def test_a_reproducible_search_on_two_objectives_is_the_same_at_any_concurrency(
        local_ray: None, table: Path, tmp_path: Path) -> None:
    """Its ASHA reads the epochs from each trial's `curve` (a multi-objective study holds no
    intermediate values); stopped trials and the front the same at concurrency 1 and 3."""
    two = ("--objectives", "val/kappa,val/loss")
    runs = [reproducible_run(table, tmp_path, name, n, *two, samples=8)
            for name, n in (("one", 1), ("three", 3))]

    def by_number(run: Path) -> list[tuple]:
        study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'study.db'}")
        return [(t.number, t.params, t.state, t.values, t.user_attrs["curve"])
                for t in study.trials]

    first, second = map(by_number, runs)
    assert len(first) == 8 and first == second
    states = {t[2] for t in first}
    assert states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    fronts = [json.loads((r / "best" / "pareto.json").read_text()) for r in runs]
    assert [f["objectives"] for f in fronts[0]] == [f["objectives"] for f in fronts[1]]


def test_a_warm_started_search_starts_from_the_earlier_ones_trials(
        local_ray: None, table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two earlier searches' finished trials join the study as priors (not this run's trials):
    one on the same curves and epochs, whose rung values count in ASHA's cutoffs (worked out by
    hand) and which is not run again; one trained 2 epochs, whose best 3 configurations run
    first. A warm start into two objectives. Both studies open in optuna-dashboard (its HTTP
    API read back: the trials, the labels, the best trials or the Pareto front)."""
    same = replay(table, tmp_path, "same", "asha", 5)
    sets = [a for k, v in PINNED.items() for a in ("--set", f"{k}={v}")]
    assert run_main(["deepdrid_finetune", "--replay", str(table), "--results", str(tmp_path),
                     "--name", "shorter", "--num-samples", "5", "--max-epochs", "2",
                     "--max-concurrent", "1", "--sampler", "random", "--no-wandb", "--seed", "7",
                     *sets]) == 0
    shorter = tmp_path / "deepdrid_finetune" / "shorter"
    capsys.readouterr()
    code = run_main(["deepdrid_finetune", "--replay", str(table), "--results", str(tmp_path),
                     "--name", "warm", "--num-samples", "5", "--max-concurrent", "1",
                     "--no-wandb", "--seed", "4", "--warm-start", str(same), str(shorter), *sets])
    assert code == 0
    printed = warm_said = capsys.readouterr().out
    assert ("warm start: 5 trial(s) of deepdrid_finetune/same added as priors (same experiment, "
            "data and epochs: their curves count in ASHA's cutoffs, and none is run again)"
            ) in printed
    assert "warm start: 5 trial(s) of deepdrid_finetune/shorter added as priors\n" in printed
    run = tmp_path / "deepdrid_finetune" / "warm"
    study = study_agrees_with_run_folder(run)
    priors = [t for t in study.trials if t.user_attrs.get("prior")]
    for name in ("same", "shorter"):
        old = optuna.load_study(study_name=name,
                                storage=f"sqlite:///{tmp_path / 'deepdrid_finetune' / name / 'study.db'}")
        mine = [t for t in priors if t.user_attrs["prior"].split("/")[1] == name]
        assert [(t.user_attrs["prior"], t.params, t.state, t.intermediate_values) for t in mine] \
            == [(f"deepdrid_finetune/{name}/{t.number}", t.params, t.state, t.intermediate_values)
                for t in old.trials]
    listed = pd.read_parquet(run / "trials.parquet")
    assert (listed["status"] == "prior").sum() == 10 and (listed["status"] != "prior").sum() == 5
    # the shorter run's best distinct configurations (full-length first) run first
    ranked = json.loads((shorter / "best" / "ranked.json").read_text())
    first = list(dict.fromkeys(r["config"]["augment"] for r in ranked))[:3]
    own = [t for t in study.trials if not t.user_attrs.get("prior")]
    assert [t.params["augment"] for t in own[:len(first)]] == first
    assert f"the best {len(first)} earlier configuration(s) are tried first" in printed
    # ASHA at its one rung (epoch 2): the median of the epoch-2 QWK of the same-curves priors
    # and of this run's earlier trials (the shorter run's epochs are another schedule's)
    trials = listed.set_index("trial_id")
    recorded = [KAPPA[t.params["augment"]][1] for t in priors
                if t.user_attrs["prior"].split("/")[1] == "same" and 2 in t.intermediate_values]
    for t in own:
        value = KAPPA[t.params["augment"]][1]
        stops = value < np.percentile(recorded, 50)
        recorded.append(value)
        assert trials.loc[t.user_attrs["ray_trial"], "status"] == (
            "stopped early" if stops else "completed")
    best = json.loads((run / "best" / "config.json").read_text())
    assert not best["trial_id"].startswith("prior")  # never this run's best
    # into a search on two objectives: the same run's stopped trials come as priors, its
    # full-length ones (which never measured val/loss as an objective) run first instead
    capsys.readouterr()
    assert run_main(["deepdrid_finetune", "--replay", str(table), "--results", str(tmp_path),
                     "--name", "two", "--num-samples", "3", "--max-concurrent", "1",
                     "--no-wandb", "--seed", "4", "--objectives", "val/kappa,val/loss",
                     "--warm-start", str(same), *sets]) == 0
    old = optuna.load_study(study_name="same", storage=f"sqlite:///{same / 'study.db'}")
    full = [t for t in old.trials if t.state == optuna.trial.TrialState.COMPLETE]
    stopped = len(old.trials) - len(full)
    two_said = capsys.readouterr().out
    assert f"{stopped} trial(s) of deepdrid_finetune/same added as priors (same experiment, " \
        f"data and epochs: their curves count in ASHA's cutoffs); {len(full)} full-length " \
        "one(s) left out" in two_said
    two = tmp_path / "deepdrid_finetune" / "two"
    study = optuna.load_study(study_name="two", storage=f"sqlite:///{two / 'study.db'}")
    own = [t for t in study.trials if not t.user_attrs.get("prior")]
    ranked = [t.params for t in sorted(full, key=lambda t: -t.value)]
    distinct = [p for i, p in enumerate(ranked) if p not in ranked[:i]][:3]
    assert [t.params for t in own[:len(distinct)]] == distinct
    listed = pd.read_parquet(two / "trials.parquet")
    assert (listed["status"] == "prior").sum() == stopped
    front = json.loads((two / "best" / "pareto.json").read_text())
    assert front and not any(f["trial_id"].startswith("prior") for f in front)
    # each study opens in optuna-dashboard, from the command the search printed
    warm = tmp_path / "deepdrid_finetune" / "warm"
    for run, said in ((warm, warm_said), (two, two_said)):
        shown = dashboard_reads(printed_dashboard(said, run), tmp_path / f"{run.name}.log")
        study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'study.db'}")
        assert shown["name"] == run.name and len(shown["trials"]) == len(study.trials)
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert attrs["experiment"] == "deepdrid_finetune" and attrs["run_folder"] == str(run)
        best = json.loads((run / "best" / "config.json").read_text())
        assert attrs["best_trial"].startswith(f"{best['trial_id']} (epoch {best['epoch']})")
        assert shown["directions"] == [d.name.lower() for d in study.directions]
        # the best trial, or the Pareto front (trials of the same values listed once there)
        listed = {t["number"]: tuple(t["values"]) for t in shown["best_trials"]}
        best_trials = {t.number: tuple(t.values) for t in study.best_trials}
        assert listed and listed.items() <= best_trials.items()
        assert set(listed.values()) == set(best_trials.values())
    assert json.loads(attrs["objectives"]) == ["val/kappa (max)", "val/loss (min)"]


def printed_dashboard(said: str, run: Path) -> str:
    """The optuna-dashboard command a search printed for its run folder."""
    line = next(x for x in said.splitlines() if x.startswith("study: optuna-dashboard"))
    command = line.removeprefix("study: ").split("  (")[0]
    assert command == f"optuna-dashboard sqlite:///{(run / 'study.db').resolve()}"
    return command


def test_the_surrogate_answers_configurations_the_table_never_saw(table: Path) -> None:
    curves = read_curves(table)
    surrogate = fit_surrogate(curves)
    recorded = surrogate.predict({**PINNED, "augment": "flip+rotate"})
    assert recorded["val/kappa"].tolist() == KAPPA["flip+rotate"]  # a recorded one: its own
    unseen = surrogate.predict({**PINNED, "augment": "flip", "lr": 3e-3})
    low, high = min(min(v) for v in KAPPA.values()), max(max(v) for v in KAPPA.values())
    assert all(low <= v <= high for v in unseen["val/kappa"])  # averages of recorded values
    assert set(unseen) == {"val/kappa", "val/loss", "train/loss", "seconds"}
    error = held_out_error(curves)
    assert error["configs"] == 5 and error["mae_best"] >= 0
    # answering the median best (0.55) for every configuration: |0.55-0.55| + |0.5-0.55| +
    # |0.9-0.55| + |0.64-0.55| + |0.2-0.55| = 0.84, a mean of 0.168
    assert error["mae_best_of_the_median"] == pytest.approx(0.168)


def test_a_tables_landscape_by_hand(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    land = landscape(read_curves(table))
    # last epochs 0.2, 0.5, 0.55, 0.64, 0.9 (sorted): the 10th percentile lies 0.4 of the way
    # from 0.2 to 0.5, the 90th 0.6 of the way from 0.64 to 0.9
    assert land["last_percentiles"][10] == pytest.approx(0.32)
    assert land["last_percentiles"][50] == pytest.approx(0.55)
    assert land["last_percentiles"][90] == pytest.approx(0.796)
    assert land["best"] == 0.9 and land["configs"] == 5
    # each curve rises, so its best is its last epoch: ranks 3, 2, 5, 4, 1. Epoch 1 ranks
    # 3, 4, 2, 5, 1: squared differences 0 + 4 + 9 + 1 + 0 = 14, 1 - 6 * 14 / (5 * 24) = 0.3;
    # epoch 2 ranks them as the best does
    assert land["rank_by_epoch"] == pytest.approx([0.3, 1.0, 1.0])
    assert bench_main(["curves", str(table)]) == 0
    printed = capsys.readouterr().out
    assert "5 configurations of 3 epochs, val/kappa (max)" in printed
    assert "10%: 0.320" in printed and "best recorded 0.900" in printed and "1: 0.30" in printed


def test_a_table_that_is_not_one_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no learning-curve table there"):
        read_curves(tmp_path / "missing.parquet")
    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(plain)
    with pytest.raises(ConfigError, match="without medtune's metadata"):
        read_curves(plain)
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="not a parquet table"):
        read_curves(tmp_path / "text.parquet")


def test_a_grown_tables_settings_match_but_for_the_seed_and_where_the_demo_set_lies() -> None:
    from search.engine.curves import check_same_settings

    there = {"data": "/home/a/.cache/medtune/demo/medmnist-seed0-v1", "lr": 0.1, "seed": 4}
    # another machine's copy of the same generated set, the next chunk's seed: the same
    check_same_settings(Path("t.parquet"), there, {**there, "seed": 5,
                                                  "data": "/root/.cache/medtune/demo/medmnist-seed0-v1"})
    for changed, named in (({"data": "/root/.cache/medtune/demo/medmnist-seed1-v1"}, "data"),
                           ({"data": "/data/medmnist-seed0-v1"}, "data"), ({"lr": 0.2}, "lr")):
        with pytest.raises(ConfigError, match=f"t.parquet: .*{named}: "):
            check_same_settings(Path("t.parquet"), there, {**there, **changed})


@pytest.mark.slow
def test_collect_records_whole_curves_grows_a_table_and_trains_nothing_twice(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from search.bench.cli import main as bench_main

    out = tmp_path / "curves.parquet"
    sets = [a for s in ("image_size=64", "max_train_batches=1", "max_eval_batches=1",
                        "model=resnet18", "weights=none") for a in ("--set", s)]

    def collect(configs: int, *more: str) -> str:
        capsys.readouterr()
        assert bench_main(["collect", "deepdrid_finetune", "--configs", str(configs), "--chunk",
                           "1", "--out", str(out), *sets, *more]) == 0
        return capsys.readouterr().out

    assert "chunk-000" in collect(1)
    first = read_curves(out)
    # the run folders are gone (a cleaned cache, another machine): a larger collection trains
    # only the configurations the table lacks, with the seed the next chunk always had
    chunks = chunk_folder(cache_root() / "curves", out) / "deepdrid_finetune"
    assert (chunks / "chunk-000" / "config.json").is_file()
    shutil.rmtree(chunks)
    said = collect(2)
    assert "chunk-001" in said and "chunk-000" not in said
    # what this command had to train, and how fast (the table held the first configuration)
    assert re.search(r"collect deepdrid_finetune: 1/1 configurations trained in \d+ s "
                     r"\(one every \d+ s\)", said), said
    curves = read_curves(out)
    assert curves.meta["configs"] == 2 and curves.epochs == 6  # the demo budget's epochs
    assert len(curves.frame) == 12 and curves.frame["seconds"].gt(0).all()
    assert curves.frame[curves.frame["config"].str.startswith("chunk-000/")].reset_index(
        drop=True).equals(first.frame)
    trained = json.loads((chunks / "chunk-001" / "config.json").read_text())["settings"]
    assert trained["seed"] == 1 and curves.meta["settings"] == {"seed": 0, "sets": sets[1::2],
                                                                  "chunk": 1}
    distributions = curves.distributions()
    assert set(distributions) == set(get_experiment("deepdrid_finetune").searched)
    for params in curves.configs()["params"]:  # inside the space
        for name, value in params.items():
            dist = distributions[name]
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                assert value in dist.choices, (name, value)
            else:
                assert dist.low <= value <= dist.high, (name, value)
    assert curves.meta["fixed"]["image_size"] == 64 and curves.meta["data_fingerprint"]
    assert curves.meta["environment"]["packages"]["torch"]
    assert "collect deepdrid_finetune --configs 2 --seed 0 --chunk 1" in curves.meta["command"]
    # every configuration's recorded curve comes back from the surrogate as it was
    surrogate = fit_surrogate(curves)
    first_params = curves.configs()["params"][0]
    assert surrogate.predict(first_params)["val/kappa"].tolist() == pytest.approx(
        curves.matrix("val/kappa")[0].tolist())
    assert "chunk-0" not in collect(2)  # every chunk is finished: nothing is trained again
    assert read_curves(out).frame.equals(curves.frame)
    # a table collected otherwise is left as it is, with the difference named
    for more, named in ((["--chunk", "1", "--seed", "1"], "seed 0 there, 1 asked"),
                        (["--chunk", "2"], "chunk 1 there, 2 asked")):
        with pytest.raises(ConfigError, match=named):
            bench_main(["collect", "deepdrid_finetune", "--configs", "3", "--out", str(out),
                        *sets, *more])
    assert read_curves(out).frame.equals(curves.frame)
