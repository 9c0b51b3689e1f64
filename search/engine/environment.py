"""What a run ran on: package versions, git commit, hardware (`environment.json`)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("medtune", "torch", "torchvision", "timm", "ray", "optuna", "numpy", "pandas",
            "scikit-learn", "pillow", "safetensors", "wandb", "grad-cam")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(*args: str, where: Path | None = None) -> str | None:
    """What `git ARGS` prints in medtune's checkout (or `where`); None where git cannot say."""
    try:
        res = subprocess.run(["git", *args], capture_output=True, text=True,
                             cwd=where or Path(__file__).parent, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def git_commit(where: Path | None = None) -> str | None:
    """The checkout's commit: $MEDTUNE_GIT_COMMIT where set (a copy of the tree sent to a
    GPU machine may carry no .git, or an older one), else what git says."""
    return os.environ.get("MEDTUNE_GIT_COMMIT") or \
        (_git("rev-parse", "HEAD", where=where) or "").strip() or None


def git_changed(where: Path | None = None) -> list[str] | None:
    """Tracked files changed since that commit (a measurement of uncommitted code); None
    where git cannot say, or where $MEDTUNE_GIT_COMMIT names the commit instead."""
    if os.environ.get("MEDTUNE_GIT_COMMIT"):
        return None
    out = _git("status", "--porcelain", "--untracked-files=no", where=where)
    return None if out is None else [line[3:] for line in out.splitlines()]


def cpu_model() -> str | None:
    """The CPU's model name as Linux names it (/proc/cpuinfo); None elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def gpu_names() -> list[str]:
    """This machine's GPUs by name, as nvidia-smi lists them; none where it is absent. A
    search's driver asks without importing torch (seconds on a CPU) or initialising CUDA on a
    GPU head whose GPUs are the trials'."""
    try:
        res = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in res.stdout.splitlines() if line.strip()] \
        if res.returncode == 0 else []


def torch_cuda() -> str | None:
    """The CUDA version torch was built for (None: a CPU build), read from torch/version.py
    without importing torch."""
    if "torch" in sys.modules:
        return sys.modules["torch"].version.cuda
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    try:
        text = (Path(spec.origin).parent / "version.py").read_text()
    except OSError:
        return None
    found = re.search(r"^cuda\s*(?::[^=]*)?=\s*'([^']*)'", text, flags=re.M)
    return found.group(1) if found else None


def describe() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "host": socket.gethostname(), "cpus": os.cpu_count(), "cpu_model": cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") else None,
        "gpus": gpu_names(), "cuda": torch_cuda(), "git_commit": git_commit(),
        "packages": package_versions(),
    }
