"""Live progress of a search: one line per reported epoch and per finished trial."""

from __future__ import annotations

import time
from typing import Any

from ray import tune


class Progress(tune.Callback):
    """Prints trials running, done and failed (read off Ray's trial list, so it is right after
    a resume too) and the best metric so far."""

    def __init__(self, metric: str, mode: str, total: int) -> None:
        self.metric, self.mode, self.total = metric, mode, total
        self.best: tuple[float, str, int] | None = None
        self.started = time.monotonic()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        value = result.get(self.metric)
        epoch = int(result.get("epoch", 0))
        if value is not None and (self.best is None or (
                value > self.best[0] if self.mode == "max" else value < self.best[0])):
            self.best = (float(value), trial.trial_id, epoch)
        shown = f"{value:.4f}" if value is not None else "-"
        self._line(trials, f"trial {trial.trial_id} epoch {epoch}: {self.metric} {shown}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, f"trial {trial.trial_id} finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, f"trial {trial.trial_id} FAILED")

    def _line(self, trials: list, event: str) -> None:
        status = [t.status for t in trials]
        minutes = (time.monotonic() - self.started) / 60
        best = (f"best {self.metric} {self.best[0]:.4f} (trial {self.best[1]}, epoch "
                f"{self.best[2]})" if self.best else "no result yet")
        print(f"[{minutes:5.1f} min] {event} | running {status.count('RUNNING')}, done "
              f"{status.count('TERMINATED')}/{self.total}, failed {status.count('ERROR')} | "
              f"{best}", flush=True)
