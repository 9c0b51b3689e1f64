"""What a restored search takes from the driver that resumes it, by public means.

`Tuner.restore` rebuilds the searcher and the callbacks by unpickling the ones the search was
started with: Ray Tune has no public way to hand a restored Tuner new ones, or to reach the
ones it restored (ray-project/ray#41364; by design a restored experiment keeps its first
spec). What belongs to the driver is bound to the run id in this process while it fits:
- its callbacks (progress with this resume's --placement-timeout, W&B, checkpoint clean-up):
  the RunConfig holds one `DriverCallbacks`, which relays every hook to the callbacks bound to
  its run, or to its own copies where none are bound (a Tuner that Ray Client runs on the
  cluster: the client's objects are out of its reach there);
- where the study is (the run folder may have moved, or be staged from an object store on
  another machine): the restored searcher reopens it there (`search.engine.searcher`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

HOOKS = ("setup", "on_step_begin", "on_step_end", "on_trial_start", "on_trial_restore",
         "on_trial_save", "on_trial_result", "on_trial_complete", "on_trial_recover",
         "on_trial_error", "on_checkpoint", "on_experiment_end")


@dataclass(frozen=True)
class Binding:
    study_url: str
    snapshot: Path | None = None  # the SQLite study that travels with Ray's state, if any
    callbacks: list[tune.Callback] = field(default_factory=list)


_BOUND: dict[str, Binding] = {}
# run id -> Ray Tune's trials as its controller last listed them (each step)
_TRIALS: dict[str, list[Any]] = {}
# run id -> why the search made no more trials (--budget-gpu-hours), for its summary
_STOPPED: dict[str, str] = {}


@contextmanager
def bound_to(run_id: str, binding: Binding) -> Iterator[None]:
    """Bind this driver's study and callbacks to `run_id` while a Tuner fits it."""
    _BOUND[run_id] = binding
    _TRIALS.pop(run_id, None)
    _STOPPED.pop(run_id, None)
    try:
        yield
    finally:
        _BOUND.pop(run_id, None)


def bound(run_id: str) -> Binding | None:
    return _BOUND.get(run_id)


def listed_trials(run_id: str) -> list[Any]:
    """The run's trials (Ray Tune's `Trial`: trial_id, status, last_result, config) as its
    controller listed them at its last step (empty before the first): what Ray holds,
    whatever a restored searcher says."""
    return _TRIALS.get(run_id, [])


def stop_note(run_id: str, note: str | None = None) -> str | None:
    """Why the search made no more trials, once said (`note`), or None."""
    if note is not None:
        _STOPPED[run_id] = note
    return _STOPPED.get(run_id)


class DriverCallbacks(tune.Callback):
    """The callbacks of a run, by its id: the driver's own while one is bound (see the module
    docstring). A module-level class with plain fields: it pickles into tuner.pkl."""

    def __init__(self, run_id: str, callbacks: list[tune.Callback]) -> None:
        self.run_id, self.own = run_id, list(callbacks)

    @property
    def callbacks(self) -> list[tune.Callback]:
        binding = bound(self.run_id)
        return binding.callbacks if binding is not None else self.own

    def get_state(self) -> dict[int, Any] | None:
        states = {i: cb.get_state() for i, cb in enumerate(self.callbacks)}
        return states if any(states.values()) else None

    def set_state(self, state: dict[int, Any]) -> None:
        for i, cb in enumerate(self.callbacks):
            if state.get(i):
                cb.set_state(state[i])

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        _TRIALS[self.run_id] = list(trials)
        for callback in self.callbacks:
            callback.on_step_begin(iteration=iteration, trials=trials, **info)


def _relay(hook: str) -> Any:
    def relay(self: DriverCallbacks, **info: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(**info)

    relay.__name__ = relay.__qualname__ = hook
    return relay


for _hook in HOOKS:
    if _hook not in DriverCallbacks.__dict__:
        setattr(DriverCallbacks, _hook, _relay(_hook))
