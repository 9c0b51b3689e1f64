"""The Ray Tune function trainable, as the search's driver hands it to Ray Tune.

The driver only passes this function on (Ray pickles it by name); the trial's worker runs it
and imports the training code then. So the driver starts a search without importing torch and
timm (about 5 s on a CPU): only a worker that trains does.
"""

from __future__ import annotations

from typing import Any


def train(config: dict[str, Any]) -> None:
    """Build data and model from `config`, train, report (trainables.train.trainable.train)."""
    from trainables.train.trainable import train as train_trial

    train_trial(config)
