"""Shared CLI plumbing: user errors become one clear line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from trainables.errors import DatasetError, MedtuneError
from trainables.progress import set_quiet

EXIT_PROBLEMS = 1  # the input was checked and is bad (dataset problems, NaN loss)
EXIT_USAGE = 2  # the command line or config is wrong


def _number(text: str, kind: type, low: float, *, strict: bool, resource: bool = False) -> float:
    """Parse a numeric flag; argparse turns the ArgumentTypeError into `argument --flag: ...`."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if value < low or (strict and value == low):
        raise argparse.ArgumentTypeError(f"{text} must be {'>' if strict else '>='} {low:g}")
    if resource and value > 1 and value != int(value):
        # Ray: a resource quantity above 1 must be whole (fractions share one device)
        raise argparse.ArgumentTypeError(f"{text}: above 1 use a whole number (fractions "
                                         "like 0.5 share one device)")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    return int(_number(text, int, 0, strict=True))


def nonnegative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    return int(_number(text, int, 0, strict=False))


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    return _number(text, float, 0, strict=True)


def nonnegative_float(text: str) -> float:
    """An argparse type: a number >= 0."""
    return _number(text, float, 0, strict=False)


def cpus(text: str) -> float:
    """An argparse type: CPUs per trial, > 0, whole above 1."""
    return _number(text, float, 0, strict=True, resource=True)


def gpus(text: str) -> float:
    """An argparse type: GPUs per trial, >= 0, whole above 1."""
    return _number(text, float, 0, strict=False, resource=True)


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
    verbosity(parser)
    return parser


def verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and "
                        "Ray's own output on the console")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or "
                        "progress lines (trainables/progress.py)")


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Our own progress at INFO (cache builds, weight loading); other libraries at WARNING.
    `quiet`: no progress bars or lines, here and in the processes this one starts."""
    set_quiet(quiet)
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
