"""What a run folder keeps of Ray Tune's trial checkpoints: only what a resume needs.

A running trial keeps its latest two checkpoints (Ray's `num_to_keep`, by time: see
`driver.run_config`). Once a trial has ended, nothing reads its checkpoints again (the final
step and `search.reproduce` retrain from the config), so:
- a completed trial, or one ASHA stopped, keeps none;
- a failed trial keeps its latest (`--resume` continues errored trials from it: a driver
  killed mid-search can record its running trials as errored), optimizer state included,
  since that resume must continue exactly.

A checkpoint is deleted only once Ray's saved experiment state says its trial has ended: a
driver killed in between would otherwise leave a state that points at a deleted checkpoint,
and that trial could not resume. Ray saves its state periodically, asks each callback for its
state as it does (`get_state`), and saves and waits for it once more before
`on_experiment_end`; so a trial is pruned at the second save after it ended (the first one
that lists it as ended has been written by then), and every ended trial at the end. Then too,
the checkpoints of an orphan (the folder of a trial that a killed driver started but never
recorded in a saved state, so that nothing can resume it) are deleted.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint_"  # Ray Tune's folders in a trial's folder
SAVES_BEFORE_PRUNING = 2


class CheckpointPruner(tune.Callback):
    """Deletes the checkpoints of ended trials (see the module docstring)."""

    def __init__(self) -> None:
        self._saves = 0
        self._ended: dict[str, tuple[Any, bool, int]] = {}  # trial id -> (trial, failed, save)
        self._started: set[str] = set()  # trials run by this driver
        self._pruned: set[str] = set()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started.add(trial.trial_id)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended[trial.trial_id] = (trial, False, self._saves)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended[trial.trial_id] = (trial, True, self._saves)

    def get_state(self) -> dict | None:
        """Called as Ray Tune saves its experiment state: prune what two saves list as ended."""
        self._saves += 1
        for trial, failed, save in list(self._ended.values()):
            if self._saves - save >= SAVES_BEFORE_PRUNING:
                self._prune(trial, failed)
        return None  # nothing to restore: a resumed search prunes at its end

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Ray has saved its final state and waited for it: prune every ended trial, the ones a
        resumed search restored as ended (never started by this driver), and orphans."""
        for trial, failed, _ in list(self._ended.values()):
            self._prune(trial, failed)
        for trial in trials:
            if trial.trial_id not in self._started and trial.status in ("TERMINATED", "ERROR"):
                self._prune(trial, trial.status == "ERROR")
        if trials:
            self._prune_orphans(trials)

    def _prune_orphans(self, trials: list) -> None:
        """A driver killed before it saved its state can leave the folder of a trial it had
        started and checkpointed but never recorded: no saved state knows that trial, so nothing
        can resume it (the search ran another in its place)."""
        import pyarrow.fs as pafs

        known = {trial.path.rstrip("/").rsplit("/", 1)[-1] for trial in trials}
        storage = trials[0].storage
        try:
            entries = storage.storage_filesystem.get_file_info(
                pafs.FileSelector(storage.experiment_fs_path, allow_not_found=True))
            for entry in entries:
                if (entry.type == pafs.FileType.Directory and entry.base_name.startswith("trial_")
                        and entry.base_name not in known):
                    removed = prune_trial_folder(storage.storage_filesystem, entry.path, keep=None)
                    log.info("%s: a trial no saved state knows; deleted its %d checkpoint(s)",
                             entry.base_name, removed)
        except Exception as e:  # tidying up never stops a search
            log.warning("could not look for orphaned trial folders: %s", e)

    def _prune(self, trial: Any, failed: bool) -> None:
        if trial.trial_id in self._pruned:
            return
        self._pruned.add(trial.trial_id)
        self._ended.pop(trial.trial_id, None)
        keep = trial.checkpoint.path.rstrip("/").rsplit("/", 1)[-1] \
            if failed and trial.checkpoint is not None else None
        try:
            removed = prune_trial_folder(trial.storage.storage_filesystem, trial.path, keep=keep)
        except Exception as e:  # tidying up never stops a search (a store that went away)
            log.warning("could not delete the checkpoints of trial %s: %s", trial.trial_id, e)
            return
        log.debug("trial %s ended: deleted %d checkpoint(s), kept %s", trial.trial_id, removed,
                  keep)


def prune_trial_folder(filesystem: Any, trial_path: str, *, keep: str | None) -> int:
    """Delete the `checkpoint_*` folders of a trial folder but `keep` (a folder name);
    returns how many were deleted."""
    import pyarrow.fs as pafs

    entries = filesystem.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True))
    removed = 0
    for entry in entries:
        if (entry.type == pafs.FileType.Directory and entry.base_name.startswith(CHECKPOINT_PREFIX)
                and entry.base_name != keep):
            filesystem.delete_dir(entry.path)
            removed += 1
    return removed
