"""`--reproducible`: the same search from the same seed, whatever the concurrency or the order
in which trials finish.

A seeded sampler alone does not give that (ray-project/ray#13616): what it proposes next
depends on which trials have finished when it is asked, and ASHA's stops depend on which
trials reached a rung first. So:
- the searcher asks configurations in fixed batches (`--reproducible N`, default 4), the next
  batch once every trial of the ones before it has ended (`search.engine.searcher`); the trials of a
  batch run side by side, up to the concurrency;
- ASHA's cutoff at a rung comes from the trials of earlier batches only (read from the study:
  `search.engine.study_asha.StudyASHA`), never from trials of the same batch, so a trial's stop does
  not depend on what ran beside it. The first batch has no earlier trials: none of it is
  stopped.
With deterministic training (the CPU, one thread per trial) the numbers repeat too. The cost:
slots stand idle at the end of each batch while its last trials finish (printed at the end of
the run, and `python -m search.bench reproducible` measures it against a free-running search).
"""

from __future__ import annotations

from typing import Any


def idle_share(trials: Any, slots: int) -> float | None:
    """The share of the search's trial slots (concurrency x wall time) that stood idle."""
    ran = trials.dropna(subset=["started", "finished"])
    if not len(ran) or slots < 1:
        return None
    wall = float(ran["finished"].max() - ran["started"].min())
    busy = float((ran["finished"] - ran["started"]).sum())
    return max(0.0, 1 - busy / (slots * wall)) if wall > 0 else None
