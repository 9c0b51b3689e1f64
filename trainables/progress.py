"""Progress of long work (the data check, the image cache, demo sets, stage 1, the final step's
members, the Grad-CAM gallery, collect): a tqdm bar with rate and ETA on a terminal; on a file,
a pipe or CI a line every tenth of the work (at most one a second); nothing with --quiet.

Everything goes to stderr, so a command's own lines on stdout are never broken up by a bar.
`--quiet` sets MEDTUNE_QUIET=1, which the processes a command starts (Ray's workers) inherit.
MEDTUNE_PROGRESS_SECONDS changes the least time between two lines (default 1).
"""

from __future__ import annotations

import math
import os
import sys
import time
from types import TracebackType
from typing import Any, TextIO, TypeVar

QUIET_ENV = "MEDTUNE_QUIET"
T = TypeVar("T")


def quiet() -> bool:
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


def set_quiet(on: bool) -> None:
    """--quiet: no progress from this process and the processes it starts."""
    if on:
        os.environ[QUIET_ENV] = "1"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def _pace(rate: float, unit: str) -> str:
    """'31.3 images/s', or for slow work 'one every 35 s'."""
    return f"{rate:.1f} {unit}/s" if rate >= 1 else f"one every {_duration(1 / rate)}"


def progress_line(what: str, done: int, total: int, unit: str, seconds: float) -> str:
    """'what: 3/10 images (30%), 1.5 images/s, about 5 s left', or once all is done
    'what: 10/10 images in 7 s (1.4 images/s)'."""
    rate = done / max(seconds, 1e-9)
    if not done:
        return f"{what}: 0/{total} {unit}"
    if done >= total:
        return f"{what}: {done}/{total} {unit} in {_duration(seconds)} ({_pace(rate, unit)})"
    return (f"{what}: {done}/{total} {unit} ({100 * done / total:.0f}%), {_pace(rate, unit)}, "
            f"about {_duration((total - done) / rate)} left")


class Progress:
    """`with Progress(total, "building the image cache", "images") as p: ... p.update()`"""

    def __init__(self, total: int, what: str, unit: str = "images", *,
                 stream: TextIO | None = None) -> None:
        self.total, self.what, self.unit = total, what, unit
        self.stream = stream or sys.stderr
        self.done, self.started = 0, time.monotonic()
        self._bar: Any = None
        self._lines = not quiet() and total > 0 and not self.stream.isatty()
        self._tenth, self._last = 0, self.started
        self._gap = float(os.environ.get("MEDTUNE_PROGRESS_SECONDS", "1"))
        if not quiet() and total > 0 and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit=f" {unit}", file=self.stream,
                             dynamic_ncols=True, leave=True, mininterval=0.2)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines and self.done < self.total:
            tenth = math.floor(10 * self.done / self.total)
            now = time.monotonic()
            if tenth > self._tenth and now - self._last >= self._gap:
                self._tenth, self._last = tenth, now
                self._say(progress_line(self.what, self.done, self.total, self.unit,
                                        now - self.started))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._lines and self.done and self._tenth:  # lines were said: say the end
            self._lines = False
            self._say(progress_line(self.what, self.done, self.total, self.unit,
                                    time.monotonic() - self.started))

    def _say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def say(line: str) -> None:
    """A command's own line on stdout, above a bar that is showing (not through it)."""
    from tqdm import tqdm

    if getattr(tqdm, "_instances", None):
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
    else:
        print(line, flush=True)

