"""A search's console shows medtune's lines; Ray's own output goes to the run's log file.

Ray writes to the driver's stderr from Python (its loggers: slow-callback warnings, start-up
notes) and from its C++ core worker (lines such as `core_worker.cc: ...` about actors that
ended). Both are kept in RUN/search.log instead, where they can be read after the fact; with
`--verbose` they are shown as well (and the Python ones are still written to the file).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LOG_FILE = "search.log"
RAY_LOGGERS = ("ray",)


@contextlib.contextmanager
def ray_output_to(log_file: Path, *, verbose: bool) -> Iterator[None]:
    """Send Ray's console output (Python and C++) to `log_file`, appending, while inside.

    The process's stderr (file descriptor 2) is pointed at the file, so C++ lines land there;
    medtune's log handlers are pointed at the real console, so its warnings still show.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", buffering=1) as out:
        handler = logging.StreamHandler(out)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        ray_loggers = [logging.getLogger(name) for name in RAY_LOGGERS]
        for logger in ray_loggers:
            logger.addHandler(handler)
        if verbose:
            try:
                yield
            finally:
                for logger in ray_loggers:
                    logger.removeHandler(handler)
            return
        sys.stderr.flush()
        saved = os.dup(2)
        console = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0),
                                   write_through=True)
        ours = _stderr_handlers()
        quiet = [(h, h.stream) for h in _ray_stream_handlers()]
        os.dup2(out.fileno(), 2)
        for h in ours:
            h.setStream(console)
        devnull = open(os.devnull, "w")  # noqa: SIM115 (closed below)
        for h, _ in quiet:  # Ray's own console handlers: the file has them already
            h.setStream(devnull)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            for h in ours:
                h.setStream(sys.stderr)
            for h, stream in quiet:
                h.setStream(stream)
            for logger in ray_loggers:
                logger.removeHandler(handler)
            console.close()
            devnull.close()


def _stderr_handlers() -> list[logging.StreamHandler]:
    """The root logger's handlers writing to stderr (medtune's, from logging.basicConfig)."""
    return [h for h in logging.getLogger().handlers
            if type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.__stderr__)]


def _ray_stream_handlers() -> list[logging.StreamHandler]:
    out = []
    for name in logging.root.manager.loggerDict:
        if name == "ray" or name.startswith("ray."):
            logger = logging.getLogger(name)
            out += [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                    and not isinstance(h, logging.FileHandler)
                    and h.stream in (sys.stderr, sys.__stderr__, sys.stdout, sys.__stdout__)]
    return out
