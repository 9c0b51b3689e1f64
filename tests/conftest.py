"""Shared fixtures: small generated data sets and tiny, fast trial configs; and what lets test
modules run side by side (`pytest -n 2`, pytest-xdist): each test's Ray is its own, and a module
marked `alone` (it stops every Ray on the machine) waits until no other module runs."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# every test gets a private image cache, never the user's ~/.cache/medtune
os.environ["MEDTUNE_CACHE"] = tempfile.mkdtemp(prefix="medtune-test-cache-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is unreachable here: fail fast
os.environ["WANDB_MODE"] = "offline"  # before any Ray starts: its workers inherit it
os.environ.pop("WANDB_API_KEY", None)
# ray.init() without an address joins the Ray that this machine started last (a `ray start` or
# a cluster_utils head of another test module running beside this one): "local" starts a Ray of
# its own, in this process and in every command a test starts. Tests of joining set an address.
os.environ["RAY_ADDRESS"] = "local"

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
# in a local run), so that neither ends alone with a long one; modules marked `alone` last, when
# the other worker has little left to wait for
LONGEST_FIRST = ("test_bench.py", "test_staged_e2e.py", "test_experiments_e2e.py",
                 "test_search_e2e.py", "test_search.py", "test_replay.py", "test_e2e.py",
                 "test_multinode.py", "test_phases.py", "test_trainable.py",
                 "test_tune_trainable.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def order(item: pytest.Item) -> tuple[bool, int]:
        alone = item.get_closest_marker("alone") is not None
        return alone, rank.get(item.path.name, len(rank))

    items.sort(key=order)  # stable: a module's tests keep their order


# a lock for every pytest process on this machine: modules hold it shared, `alone` ones
# exclusively; a turnstile before it keeps new modules out while an `alone` one waits (flock:
# released when the process ends, however it ends)
LOCKS = Path(tempfile.gettempdir()) / "medtune-tests"


@pytest.fixture(scope="module", autouse=True)
def _module_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Held for the whole module, before its own module fixtures (a shared Ray) start and after
    they stop."""
    alone = request.node.get_closest_marker("alone") is not None
    LOCKS.mkdir(exist_ok=True)
    with open(LOCKS / "turnstile.lock", "a") as turnstile, open(LOCKS / "modules.lock", "a") as f:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(f, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
