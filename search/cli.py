"""Shared CLI plumbing: user errors become one clear line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from trainables.errors import DatasetError, MedtuneError

EXIT_PROBLEMS = 1  # the input was checked and is bad (dataset problems, NaN loss)
EXIT_USAGE = 2  # the command line or config is wrong


def experiment_parser(prog: str, doc: str | None, *, demo_help: str,
                      data_help: str) -> argparse.ArgumentParser:
    """A parser with the arguments every experiment command shares: the experiment, --demo or
    --data, and repeatable --set key=value."""
    parser = argparse.ArgumentParser(prog=prog, description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="see python -m search.list")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--demo", action="store_true", help=demo_help)
    source.add_argument("--data", help=data_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a config value; repeat as needed")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


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
