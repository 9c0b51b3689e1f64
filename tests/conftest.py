"""Shared fixtures: small generated data sets and tiny, fast trial configs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# every test gets a private image cache, never the user's ~/.cache/medtune
os.environ["MEDTUNE_CACHE"] = tempfile.mkdtemp(prefix="medtune-test-cache-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is unreachable here: fail fast
os.environ["WANDB_MODE"] = "offline"  # before any Ray starts: its workers inherit it
os.environ.pop("WANDB_API_KEY", None)

from tests.helpers import TINY_SPEC, make_demo


@pytest.fixture(scope="session")
def course_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small DeepDRiD set in the course layout; do not modify (copy it first)."""
    return make_demo(tmp_path_factory.mktemp("course") / "deepdrid", "course", TINY_SPEC)


@pytest.fixture(scope="session")
def original_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory.mktemp("original") / "deepdrid", "original", TINY_SPEC)


@pytest.fixture()
def course_copy(course_demo: Path, tmp_path: Path) -> Path:
    """A private copy of the course-layout set that a test may break."""
    import shutil

    return Path(shutil.copytree(course_demo, tmp_path / "deepdrid"))
