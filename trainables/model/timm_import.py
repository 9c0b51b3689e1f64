"""timm, loaded without the `import wandb` that its training utilities try.

`timm.utils.summary` tries `import wandb` for the logger of timm's own training scripts, which
medtune never calls. With wandb installed (medtune depends on it) that import costs about
0.7 CPU-s in every process that loads timm: each trial, final-step member and command. So wandb
is hidden while timm loads, unless this process has imported it already; an `import wandb`
afterwards loads it as usual.
"""

from __future__ import annotations

import sys

_hidden = "wandb" not in sys.modules
if _hidden:
    sys.modules["wandb"] = None  # type: ignore[assignment]  # `import wandb` raises ImportError
try:
    import timm
finally:
    if _hidden and "wandb" in sys.modules and sys.modules["wandb"] is None:
        del sys.modules["wandb"]

__all__ = ["timm"]
