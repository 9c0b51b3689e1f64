"""A picture of a run's report: its first screen, as a headless Chromium draws it.

    python -m search.screenshot results/deepdrid_finetune/<run> --out results/report.png

The README's picture is made this way from the quick start's run. Chromium (or Chrome) must
be installed: `chromium`, `chromium-browser`, `google-chrome`, or MEDTUNE_BROWSER naming one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from search.cli import positive_int, run
from trainables.errors import ConfigError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str:
    named = os.environ.get("MEDTUNE_BROWSER")
    found = shutil.which(named) if named else next(filter(None, map(shutil.which, BROWSERS)), None)
    if not found:
        raise ConfigError(f"no browser to draw the report with: install Chromium (one of "
                          f"{', '.join(BROWSERS)}) or set MEDTUNE_BROWSER")
    return found


def screenshot(page: Path, out: Path, *, width: int, height: int) -> Path:
    """`page` drawn at width x height pixels into the PNG `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:  # no state of the user's browser
        done = subprocess.run(
            [browser(), "--headless=new", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--screenshot={out.resolve()}", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not out.is_file():
        raise ConfigError(f"the browser could not draw {page}: {done.stderr.strip()[-300:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.screenshot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder whose final step wrote report/index.html")
    p.add_argument("--out", type=Path, default=Path("results/report.png"))
    p.add_argument("--width", type=positive_int, default=1150)  # the page is 1100 px wide
    p.add_argument("--height", type=positive_int, default=1100)
    args = p.parse_args(argv)
    page = args.run / "report" / "index.html"
    if not page.is_file():
        raise ConfigError(f"{page} does not exist: run the final step first "
                          f"(python -m search.final {args.run})")
    print(screenshot(page, args.out, width=args.width, height=args.height))
    return 0


if __name__ == "__main__":
    run(main)
