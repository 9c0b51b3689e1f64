"""Per-image work on every core of a node: a process per core, each taking chunks in turn.

Decoding a JPEG releases Python's GIL, but the cropping, resizing and array work around it
mostly does not: threads kept about 1.2 cores busy building a cache of 1024 px fundus JPEGs on
a 16-core node. Processes are started with "spawn" (a fork of a process that holds torch's,
Ray's or gRPC's threads can hang) and import only numpy, PIL and trainables.data.images;
a job too small to pay for starting them (about a second) runs in this process.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from trainables.errors import MedtuneError

R = TypeVar("R")
MIN_PER_PROCESS = 100  # images: fewer each, and the processes' start costs more than it saves


def node_cores() -> int:
    """The cores this process may run on (a container's or taskset's share), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_processes(items: int, processes: int = 0) -> int:
    """`processes` where given (at most one per item), else one per core with at least
    MIN_PER_PROCESS items each; at least 1 (1: in this process)."""
    if processes:
        return max(1, min(processes, items))
    return max(1, min(node_cores(), items // MIN_PER_PROCESS))


def chunks(items: int, processes: int) -> list[range]:
    """Ranges covering 0..items: about eight per process (an even finish) and at most 64
    items each; in this process, twenty of at most 16 (the progress moves every tenth)."""
    size = max(1, min(64, math.ceil(items / (8 * processes))) if processes > 1
               else min(16, math.ceil(items / 20)))
    return [range(start, min(items, start + size)) for start in range(0, items, size)]


def run_chunks(work: Callable[[Any], R], jobs: Sequence[Any], processes: int) -> Iterator[R]:
    """work(job) for each job, in order: in `processes` processes, or here when 1. `work`
    must be a module-level function of a module that imports little (it is pickled by name)."""
    if processes <= 1:
        yield from map(work, jobs)
        return
    try:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield from pool.map(work, jobs)
    except BrokenProcessPool as e:
        raise PoolError("a process decoding images ended without finishing (killed, or out of "
                        f"memory?); nothing was kept. Run again, or with fewer processes ({e})") from e


class PoolError(MedtuneError):
    """A worker process of the pool died."""
