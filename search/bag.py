"""Bag existing prediction CSVs into one (probabilities averaged where present, else a vote).

    python -m search.bag a.csv b.csv c.csv --out bag.csv
    python -m search.bag RUN/submission/member_*.csv --out bag.csv --method vote

Each CSV has `ID,TARGET` and optionally `p0..pK` probability columns (grades, classes), or
`ID` and one probability column per label (multi-label, averaged); files whose IDs disagree
are refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from search.cli import run
from search.engine.bagging import METHODS, bag_csvs
from trainables.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.bag", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csvs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--method", choices=METHODS, default="mean")
    args = p.parse_args(argv)
    if len(args.csvs) < 2:
        raise ConfigError("give two or more CSVs to bag")
    bagged = bag_csvs(args.csvs, args.method)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bagged.to_csv(args.out, index=False)
    how = ("majority vote" if "TARGET" in bagged and "p0" not in bagged
           else "averaged probabilities")
    print(f"bagged {len(args.csvs)} files ({how}), {len(bagged)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    run(main)
