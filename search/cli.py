"""Shared CLI plumbing: user errors become one clear line on stderr, never a traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from trainables.errors import DatasetError, MedtuneError

EXIT_PROBLEMS = 1  # the input was checked and is bad (dataset problems, NaN loss)
EXIT_USAGE = 2  # the command line or config is wrong


def setup_logging(verbose: bool = False) -> None:
    """Our own progress at INFO (cache builds, weight loading); other libraries at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("MEDTUNE_LOG", "INFO"))
    for name in ("trainables", "search", "spaces"):
        logging.getLogger(name).setLevel(level)


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Call `main(argv)` and exit with its code; `MedtuneError` prints `error: ...`."""
    try:
        code = main(argv)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        code = EXIT_PROBLEMS
    except MedtuneError as e:
        print(f"error: {e}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; what was written so far is kept", file=sys.stderr)
        code = 130
    sys.exit(code)
