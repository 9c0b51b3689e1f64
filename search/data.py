"""Dataset commands: generate the demo set, check a dataset before spending GPU time.

    python -m search.data demo deepdrid_finetune --out DIR [--layout course|original] [--seed N]
    python -m search.data check deepdrid_finetune --data DIR

`check` reads the layout it finds, validates every row (the columns are there, the label is in
range, the image exists and decodes completely, no patient sits in two splits, no split is
empty) and prints a summary. Every problem is listed with its file and CSV row; the exit code
is 1 when there are problems.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from search.cli import EXIT_PROBLEMS, nonnegative_int, positive_int, run, setup_logging
from spaces import get_experiment
from trainables.datasets import read_dataset, summarize, validate
from trainables.demo import DEMO_WRITERS, DemoSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write the seeded synthetic demo set of an experiment")
    demo.add_argument("experiment")
    demo.add_argument("--out", required=True, type=Path, help="folder to write")
    demo.add_argument("--layout", default="course", choices=["course", "original"],
                      help="DeepDRiD course layout (default) or the original release")
    demo.add_argument("--seed", type=nonnegative_int, default=0)
    demo.add_argument("--patients", type=positive_int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                      help="patients per split (default 60 16 10)")
    check = sub.add_parser("check", help="validate a dataset and print a summary")
    check.add_argument("experiment")
    check.add_argument("--data", required=True, type=Path)
    check.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    experiment = get_experiment(args.experiment)

    if args.command == "demo":
        spec = DemoSpec(seed=args.seed)
        if args.patients:
            train, val, test = args.patients
            spec = DemoSpec(train_patients=train, val_patients=val, test_patients=test,
                            seed=args.seed)
        writer = DEMO_WRITERS[experiment.dataset]
        writer(args.out, layout=args.layout, spec=spec)
        print(f"wrote a {args.layout}-layout demo set for {experiment.name} to {args.out}")
        return 0

    index = read_dataset(experiment.dataset, args.data)
    validate(index, progress=_progress if sys.stderr.isatty() else None)
    if len(index.frame):
        print(summarize(index))
    for warning in index.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if index.problems:
        print(f"\n{len(index.problems)} problem(s) in {args.data}:", file=sys.stderr)
        for problem in index.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"\n{args.data}: OK, {len(index.frame)} images")
    return 0


def _progress(done: int, total: int) -> None:
    if done == total or done % 50 == 0:
        print(f"\rdecoding images {done}/{total}", end="\n" if done == total else "",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    run(main)
