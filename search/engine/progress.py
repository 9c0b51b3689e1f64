"""Live progress of a search: one line per reported epoch and per finished trial, a line while
trials wait for resources, and a stop when none can be placed for too long."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from ray import tune

from trainables.errors import StorageError
from trainables.tasks import better

log = logging.getLogger(__name__)

WAIT_NOTICE_S = 20.0  # trials pending with none running this long: say so
WAIT_REPEAT_S = 60.0  # and again this often


class Progress(tune.Callback):
    """Prints trials running, pending, done and failed (read off Ray's trial list, so it is
    right after a resume too) and the best metric so far. While trials are pending and none
    runs, it says that they wait for resources (for the autoscaler, when there is one); after
    `placement_timeout` seconds of that it ends the search as Ctrl-C does (`stalled` says
    why), so what finished is kept and `--resume` continues. When a trial fails and the run's
    `store` cannot be written (gone, full, read-only), it ends the search the same way
    (`store_failed` holds the store's error): the trials after it would fail too."""

    def __init__(self, metric: str, mode: str, total: int, *, cpus: float = 1, gpus: float = 0,
                 autoscaler: bool = False, placement_timeout: float = 15 * 60,
                 store: Any = None) -> None:
        self.metric, self.mode, self.total = metric, mode, total
        self.cpus, self.gpus, self.autoscaler = cpus, gpus, autoscaler
        self.request = f"{cpus:g} CPU + {gpus:g} GPU"
        self.placement_timeout = placement_timeout
        self.best: tuple[float, str, int] | None = None
        self.started = time.monotonic()
        self.waiting_since: float | None = None
        self.last_notice = 0.0
        self.stalled: str | None = None
        self.store = store
        self.store_failed: StorageError | None = None

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        value = result.get(self.metric)
        epoch = int(result.get("epoch", 0))
        if value is not None and (self.best is None or better(value, self.best[0], self.mode)):
            self.best = (float(value), trial.trial_id, epoch)
        shown = f"{value:.4f}" if value is not None else "-"
        self._line(trials, f"trial {trial.trial_id} epoch {epoch}: {self.metric} {shown}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, f"trial {trial.trial_id} finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, f"trial {trial.trial_id} FAILED")
        self._check_store(trials)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check_store(trials)  # a failure Ray retries: the store, before it is tried again

    def _check_store(self, trials: list) -> None:
        if self.store is None or self.store_failed:
            return
        try:
            self.store.probe()
        except StorageError as e:
            self.store_failed = e
            self._line(trials, f"stopping the search: its results store failed ({e})")
            interrupt_tune()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        pending = sum(t.status == "PENDING" for t in trials)
        if not pending or any(t.status == "RUNNING" for t in trials):
            self.waiting_since = None
            return
        now = time.monotonic()
        if self.waiting_since is None:
            self.waiting_since = self.last_notice = now
            if self.autoscaler and not self._a_live_node_fits():  # say so at once
                self._line(trials, f"{pending} trial(s) pending ({self.request} each): no live "
                                   "node can hold one, waiting for the autoscaler to start a node")
            return
        waited = now - self.waiting_since
        if waited >= self.placement_timeout and self.stalled is None:
            self.stalled = (f"no trial could be placed for {waited / 60:.1f} min (each asks for "
                            f"{self.request} on one node; no node had them free"
                            + (" and the autoscaler started none" if self.autoscaler else "")
                            + "; --placement-timeout sets the limit)")
            self._line(trials, f"stopping the search: {self.stalled}")
            interrupt_tune()
        elif now - self.last_notice >= (
                min(WAIT_NOTICE_S, self.placement_timeout / 2)
                if self.last_notice == self.waiting_since else WAIT_REPEAT_S):
            self.last_notice = now
            who = ("waiting for the autoscaler to start a node" if self.autoscaler
                   else "waiting for a node with them free")
            self._line(trials, f"{pending} trial(s) pending ({self.request} each), {who} "
                               f"for {waited / 60:.1f} min (limit "
                               f"{self.placement_timeout / 60:g} min)")

    def _a_live_node_fits(self) -> bool:
        from search.engine.driver import live_node_shapes

        return any(s.trials(self.cpus, self.gpus) for s in live_node_shapes())

    def _line(self, trials: list, event: str) -> None:
        status = [t.status for t in trials]
        minutes = (time.monotonic() - self.started) / 60
        best = (f"best {self.metric} {self.best[0]:.4f} (trial {self.best[1]}, epoch "
                f"{self.best[2]})" if self.best else "no result yet")
        pending = status.count("PENDING")
        print(f"[{minutes:5.1f} min] {event} | running {status.count('RUNNING')}, "
              + (f"pending {pending}, " if pending else "")
              + f"done {status.count('TERMINATED')}/{self.total}, failed {status.count('ERROR')} | "
              f"{best}", flush=True)


def interrupt_tune() -> bool:
    """End `Tuner.fit()` the way Ctrl-C does: Ray Tune saves its experiment state, leaves each
    trial's status as it is (so `--resume` continues) and returns. Ray offers no public call for
    this (a Stopper's `stop_all` would end pending trials as TERMINATED, never to run); its
    signal handler, installed by `fit()` in the main thread for SIGINT and SIGUSR1, is how a
    run is stopped gracefully. Returns False (and does nothing) where no handler is installed."""
    if not callable(signal.getsignal(signal.SIGUSR1)):
        log.warning("cannot stop the search: Ray Tune's signal handler is not installed "
                    "(fit() outside the main thread)")
        return False
    os.kill(os.getpid(), signal.SIGUSR1)
    return True
