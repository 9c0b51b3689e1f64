"""The final step of a search: retrain the best configurations, bag them, write the submission.

    python -m search.final results/deepdrid_attention/<run>              # after search.run
    python -m search.final RUN --top-k 5 --method vote --no-tta
    python -m search.final s3://bucket/medtune/deepdrid_attention/<run>  # staged, then uploaded

Each of the top k configurations (best/top_k.json) is retrained at full length on its own
bootstrap resample of the training set with its own seed, as a Ray task with the search's
per-trial resources (on a cluster: on the GPU workers, several at a time; a member whose node
is lost is retrained elsewhere). Their probabilities are bagged (mean, or a vote for
single-label tasks) and the bag is reported against each member on validation, in the task's
metrics. The test split is predicted (flip TTA by default) into
submission/test_predictions.csv in the task's format (ID,TARGET for grades and classes; ID and
one probability column per label for multi-label data) and a CSV per member; a dataset without
a test split gets no submission.

`--select greedy` (the default of deepdrid_ensemble) trains the best trial of each architecture
beside the top k and bags the members by greedy ensemble selection with replacement on
validation (Caruana et al., 2004); the report sets the greedy bag beside the plain top-k bag and
every member. The greedy bag's validation score is optimistic (it was chosen there): it is
also cross-fitted (greedy selection on each half of validation predicts the other), and scored
on the test split where that has labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from search.cli import positive_int, run, setup_logging, verbosity
from search.engine.bagging import METHODS
from search.engine.final import SELECTIONS, choose_final, score_final, train_final, write_final
from search.engine.storage import RunStore, describe_sizes
from search.report.final import report_final, run_sizes
from trainables.progress import say


def run_final(run_dir: Path, *, top_k: int | None = None, method: str = "mean",
              tta: bool = True, select: str | None = None, baseline: bool = True,
              pick: str | None = None, echo: Any = print) -> dict[str, Any]:
    """Retrain, bag and predict for the run in `run_dir`; returns the final metrics. With
    `baseline`, the experiment's defaults are trained beside the members (search.engine.gain). Five
    steps: choose, train, score and bag, write, report."""
    from search.engine.run_folder import check_split
    from trainables.data.trial_data import load_data

    plan = choose_final(run_dir, top_k=top_k, method=method, select=select, baseline=baseline,
                        pick=pick, echo=echo)
    trained = train_final(plan, tta=tta, echo=echo)
    data = load_data(plan.configs[0])  # the driver's copy: labels, ids and images for the report
    check_split(run_dir, data.index)
    summary, weights, bag_val = score_final(plan, trained, data, tta=tta, echo=echo)
    write_final(plan, trained, summary, weights, bag_val, data, echo=echo)
    report_final(plan, summary, data, bag_val, echo=echo)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.final", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder of python -m search.run (a path or a URI)")
    p.add_argument("--top-k", type=positive_int, help="members (default: the experiment's, 3)")
    p.add_argument("--method", choices=METHODS, default="mean")
    p.add_argument("--no-tta", action="store_true", help="no flip test-time augmentation")
    p.add_argument("--select", choices=SELECTIONS,
                   help="the members of the bag: the top k (default), or greedy selection on "
                        "validation among them and each architecture's best (deepdrid_ensemble's "
                        "default)")
    p.add_argument("--no-baseline", action="store_true",
                   help="do not train the experiment's defaults beside the members (what the "
                        "search bought is then not measured)")
    p.add_argument("--pick", metavar="CONSTRAINTS",
                   help="a search with --objectives: the members from its Pareto front "
                        "(best/pareto.json) that meet these, e.g. 'latency<=20' or "
                        "'latency<=20,params<5e6', best first by the first objective")
    verbosity(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    store = RunStore.of(args.run)
    store.pull()  # a run folder on an object store: into its local stage
    store.run_config("search.final")  # a missing, empty or foreign folder: one clear line
    summary = run_final(store.local, top_k=args.top_k, method=args.method, tta=not args.no_tta,
                        select=args.select, baseline=not args.no_baseline, pick=args.pick,
                        echo=say)
    store.push()
    print(outputs_line(store, summary))
    return 0


def outputs_line(store: RunStore, summary: dict[str, Any]) -> str:
    """Where the submission is (if any) and what the run folder holds on disk."""
    where = (f"submission: {store.location}/{summary['submission']}" if summary["submission"]
             else "no submission (no test split)")
    return f"{where}\n{disk_line(store)}"


def disk_line(store: RunStore) -> str:
    return f"run folder on disk: {describe_sizes(run_sizes(store.local))}"


if __name__ == "__main__":
    run(main)
