"""Dataset commands: generate the demo set, check a dataset before spending GPU time.

    python -m search.data demo deepdrid_finetune --out DIR [--layout course|original] [--seed N]
    python -m search.data demo medmnist --out DIR [--layout split|raw|npz]
    python -m search.data demo rfmid_multilabel --out DIR
    python -m search.data demo idrid|aptos|kaggle_dr --out DIR     # a dataset kind works too
    python -m search.data check deepdrid_finetune --data DIR
    python -m search.data check medmnist --data ~/.medmnist/pathmnist_64.npz   # or: --data pathmnist

`check` reads the layout it finds, validates every row (the columns are there, the label is in
range, the image exists and decodes completely, no patient sits in two splits, no split is
empty) and prints a summary. Every problem is listed with its file and CSV row; the exit code
is 1 when there are problems. The first argument is an experiment (python -m search.list) or a
dataset kind (deepdrid, imagefolder, medmnist, medmnist_npz, rfmid, idrid, aptos, kaggle_dr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from search.cli import (
    EXIT_PROBLEMS,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    run,
    setup_logging,
    verbosity,
)
from spaces import get_experiment
from trainables.data.datasets import ReadOptions, summarize, validate
from trainables.data.demo import DemoSpec
from trainables.data.demo_sets import demo_writers
from trainables.data.formats import read_dataset
from trainables.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write the seeded synthetic demo set of an experiment")
    demo.add_argument("experiment")
    demo.add_argument("--out", required=True, type=Path, help="folder to write")
    demo.add_argument("--layout", help="DeepDRiD: course (default) or original; class folders: "
                      "split (default) or raw; medmnist: npz too")
    demo.add_argument("--seed", type=nonnegative_int, default=0)
    demo.add_argument("--patients", type=positive_int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                      help="patients per split (default 60 16 10)")
    check = sub.add_parser("check", help="validate a dataset and print a summary")
    check.add_argument("experiment")
    check.add_argument("--data", required=True, help="the dataset root, or a file (.npz)")
    check.add_argument("--val-fraction", type=positive_float, default=0.15,
                       help="share drawn for validation where the data has no val split")
    check.add_argument("--test-fraction", type=nonnegative_float, default=0.15,
                       help="share drawn for test from a raw class-folder tree")
    check.add_argument("--split-seed", type=nonnegative_int, default=0)
    verbosity(check)
    verbosity(demo)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.command == "demo":
        kind = demo_kind(args.experiment)
        spec = DemoSpec(seed=args.seed)
        if args.patients:
            train, val, test = args.patients
            spec = DemoSpec(train_patients=train, val_patients=val, test_patients=test,
                            seed=args.seed)
        writers = demo_writers()
        if kind not in writers:
            raise ConfigError(f"no demo set for {kind!r}; have: {', '.join(writers)}")
        data = writers[kind](args.out, layout=args.layout, spec=spec)
        print(f"wrote the {kind} demo set ({args.layout or 'default'} layout) to {args.out}; "
              f"pass --data {data}")
        return 0

    dataset = dataset_kind(args.experiment)
    options = ReadOptions(val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                          split_seed=args.split_seed)
    index = read_dataset(dataset, args.data, options=options)
    validate(index)
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


def dataset_kind(name: str) -> str:
    """The dataset kind of an experiment name, or `name` itself when it is a dataset kind."""
    from trainables.data.formats import readers

    if name in readers():
        return name
    return get_experiment(name).dataset


def demo_kind(name: str) -> str:
    """The demo set of an experiment name, or `name` itself when it names a demo set."""
    if name in demo_writers():
        return name
    return get_experiment(name).demo_kind


if __name__ == "__main__":
    run(main)
