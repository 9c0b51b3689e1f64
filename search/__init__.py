"""medtune's commands (`python -m search.<command>`) and the search engine under them.

A command that needs a package this machine lacks (a GPU box may have torch and timm but not
Ray, Optuna, wandb or grad-cam: `search.train` and the bench's input, train and limit sections
run there) says so in one line instead of a traceback.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

# what each optional-on-some-machines package is for, and its requirement (pyproject.toml)
NEEDED = {
    "ray": ("Ray Tune (searches, the final step, the cluster)", "ray[tune,client]>=2.60,<3"),
    "optuna": ("Optuna (the search's sampler and study)", "optuna>=5.0,<6"),
    "wandb": ("Weights & Biases", "wandb>=0.17"),
    "pytorch_grad_cam": ("grad-cam (the report's Grad-CAM)", "grad-cam>=1.5"),
}


def missing_package_hook(kind: type[BaseException], error: BaseException,
                         trace: TracebackType | None, previous: Any = sys.excepthook) -> None:
    package = (getattr(error, "name", None) or "").split(".")[0]
    if not isinstance(error, ImportError) or package not in NEEDED:
        previous(kind, error, trace)
        return
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    command = f"python -m {main.name.removesuffix('.__main__')}" if main else "this command"
    what, requirement = NEEDED[package]
    print(f"error: {command} needs {what}, and `import {package}` fails here ({error}): "
          f"`pip install -e .` installs it, or pip install '{requirement}'", file=sys.stderr)
    sys.exit(2)


sys.excepthook = missing_package_hook
