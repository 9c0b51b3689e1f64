"""Shared fixtures: small generated data sets and tiny, fast trial configs; and what lets test
modules run side by side (`pytest -n 2`, pytest-xdist): each test's Ray is its own (a test that
starts a cluster gives it a port of its own and stops only its processes), the longest modules
first."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# every test gets a private image cache, never the user's ~/.cache/medtune
os.environ["MEDTUNE_CACHE"] = tempfile.mkdtemp(prefix="medtune-test-cache-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is unreachable here: fail fast
# two modules side by side put more compute threads than cores on the machine: OpenMP's threads
# (torch's intra-op pool) then sleep when idle instead of spinning, which burnt about a quarter
# of the CPU time of two searches side by side (a test's Ray workers inherit it)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["WANDB_MODE"] = "offline"  # before any Ray starts: its workers inherit it
os.environ.pop("WANDB_API_KEY", None)
# ray.init() without an address joins the Ray that this machine started last (a `ray start` or
# a cluster_utils head of another test module running beside this one): "local" starts a Ray of
# its own, in this process and in every command a test starts. Tests of joining set an address.
os.environ["RAY_ADDRESS"] = "local"
# Ray 2.60 starts every local cluster with token authentication (setting this in the process
# that starts it); set before Ray is imported, a test that joins a cluster by its address, one
# it did not start, sends the token too
os.environ.setdefault("RAY_AUTH_MODE", "token")

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


# `pytest -n 2` hands each worker a module at a time, in this order: the longest first (measured
# in a local run), so that neither ends alone with a long one
LONGEST_FIRST = ("test_bench.py", "test_staged_e2e.py", "test_experiments_e2e.py",
                 "test_search_e2e.py", "test_search.py", "test_replay.py", "test_e2e.py",
                 "test_multinode.py", "test_phases.py", "test_trainable.py",
                 "test_tune_trainable.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    # stable: a module's tests keep their order
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
