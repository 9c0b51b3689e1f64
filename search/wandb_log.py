"""Ray's W&B callback with the driver kept out of its waits.

Ray's `WandbLoggerCallback` starts, per trial, a queue actor and a logging actor, and hands
each result to the queue with a blocking `Queue.put` (a `ray.get` on the queue actor). The
driver handles results one at a time, so every trial waited for it: the first put of a trial
waits for its queue actor's process to start, and any put waits for a queue actor that has to
share the CPUs with the trials (1.3-1.6 s per result on 2 cores, which Ray reported as a slow
`callbacks.on_trial_result`). Here one background thread makes the puts, in the order they
were asked for, and the driver goes on at once; the experiment's end waits for the thread
before Ray's callback waits for the uploads.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ray.air.integrations.wandb import WandbLoggerCallback

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 300.0  # the queued puts, at the experiment's end


class _QueueInOrder:
    """A trial's W&B queue whose puts the callback's sender thread makes."""

    def __init__(self, queue: Any, callback: WandbCallback) -> None:
        self.queue, self.callback = queue, callback

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.callback.send(self.queue.put, item, block, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


class WandbCallback(WandbLoggerCallback):
    """`WandbLoggerCallback` whose queue puts run on one background thread (module docstring)."""

    _sender: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles the run config with its callbacks
        state = self.__dict__.copy()
        state["_sender"] = None
        return state

    def send(self, put: Any, *args: Any) -> None:
        if self._sender is None:
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medtune-wandb")
        self._sender.submit(put, *args).add_done_callback(_log_failure)

    def _start_logging_actor(self, trial: Any, exclude_results: list[str],
                             **wandb_init_kwargs: Any) -> None:
        fresh = trial not in self._trial_logging_futures
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)
        if fresh:
            self._trial_queues[trial] = _QueueInOrder(self._trial_queues[trial], self)

    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until every put asked for so far is made; False if that took too long."""
        if self._sender is None:
            return True
        done = threading.Event()
        self._sender.submit(done.set)  # one thread: it runs after every earlier put
        return done.wait(timeout)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if not self.drain():
            log.warning("W&B: results still queued after %.0f s; some may be missing",
                        DRAIN_TIMEOUT_S)
        super().on_experiment_end(trials, **info)
        if self._sender is not None:
            self._sender.shutdown(wait=False)
            self._sender = None


def _log_failure(future: Future) -> None:
    error = future.exception()
    if error is not None:
        log.warning("W&B: a result could not be queued for its logging actor: %s", error)
