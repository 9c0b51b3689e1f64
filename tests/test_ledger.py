"""The cost ledger (search.engine.ledger) and the GPU-hour budget (search.engine.driver.
LiveLimiter) on numbers worked out by hand; the real search's ledger and budget are tested in
test_search (a small run, its final step, a budget that stops a search)."""

from __future__ import annotations

import pandas as pd
import pytest
from ray.tune.experiment import Trial
from ray.tune.search import Searcher

from search.engine.binding import Binding, DriverCallbacks, bound_to, stop_note
from search.engine.driver import make_searcher
from search.engine.ledger import describe, run_ledger, with_costs
from search.engine.storage import RunStore
from tests.helpers import plan_at


def test_the_ledger_adds_trials_and_models_by_part_and_node_type() -> None:
    trials = with_costs(pd.DataFrame({"trial_id": ["a", "b"], "seconds": [3600.0, 1800.0],
                                      "node_type": ["gpu_spot", "gpu_worker"]}),
                        cpus=4, gpus=0.5)
    assert trials["gpu_hours"].tolist() == [0.5, 0.25] and trials["cpu_hours"].tolist() == [4, 2]
    ledger = run_ledger(trials, [{"model": "member 1", "minutes": 30, "node_type": "gpu_spot"}],
                        stage1_minutes=6, cpus=4, gpus=0.5)
    assert ledger["search"] == {"gpu_hours": 0.75, "cpu_hours": 6.0, "trials": 2}
    assert ledger["final"] == {"gpu_hours": 0.25, "cpu_hours": 2.0, "models": 1}
    assert ledger["total"] == {"gpu_hours": 1.0, "cpu_hours": 8.0}
    assert ledger["stage1"]["gpu_hours"] == pytest.approx(0.05)  # 6 minutes of half a GPU
    assert ledger["node_types"] == {"gpu_spot": {"gpu_hours": 0.75, "cpu_hours": 6.0},
                                    "gpu_worker": {"gpu_hours": 0.25, "cpu_hours": 2.0}}
    assert describe(ledger).startswith("cost: 1.00 GPU-hours, 8.00 CPU-hours: search 0.75 GPU-h")


def trial(trial_id: str, status: str, seconds: float, epoch: int) -> Trial:
    made = Trial("__fake", stub=True, trial_id=trial_id, config={"epochs": 4})
    made.set_status(status)
    if epoch:
        made.update_last_result({"time_total_s": seconds, "epoch": epoch})
    return made


def test_a_budget_stops_new_trials_when_spent_rest_and_one_more_would_pass_it(tmp_path) -> None:
    """Half a GPU a trial, 4 epochs: one ended trial of 2 epochs (100 s each), one running
    after 1 epoch of 200 s. Spent 400 s, the running one's rest 3 x 200 s, one more trial
    4 x the mean epoch of 150 s: 1600 s of half a GPU = 0.2222 GPU-hours."""
    plan = plan_at(RunStore(tmp_path / "deepdrid_finetune" / "r1"), max_epochs=4)
    for budget, allowed in ((0.23, True), (0.22, False)):
        limiter = make_searcher(plan, startup_trials=2)
        limiter.gpus_per_trial, limiter.budget_gpu_hours = 0.5, budget
        with bound_to("r1", Binding(plan.storage_url)):
            DriverCallbacks("r1", []).on_step_begin(iteration=1, trials=[
                trial("a", Trial.TERMINATED, 200.0, 2), trial("b", Trial.RUNNING, 200.0, 1)])
            suggested = limiter.suggest(f"c{budget}")
            assert (suggested not in (None, Searcher.FINISHED)) is allowed
            note = stop_note("r1")
        assert (note is None) is allowed
    assert note == ("--budget-gpu-hours 0.22: 0.056 GPU-hours spent, 0.222 with the running "
                    "trials' rest and one more trial: no new trial")
