"""The experiments and what each searches.

    python -m search.list
    python -m search.list deepdrid_attention      # one experiment in full
"""

from __future__ import annotations

import argparse

from search.cli import run
from spaces import EXPERIMENTS, get_experiment
from spaces.base import Experiment


def describe(experiment: Experiment, *, full: bool) -> str:
    b, d = experiment.budget, experiment.demo_budget
    lines = [f"{experiment.name}: {experiment.summary}",
             f"  data:     {experiment.data_format}",
             f"  metric:   {experiment.metric} ({experiment.mode})",
             f"  searches: {', '.join(experiment.searched) or '(no search space yet)'}"]
    if full:
        lines += [f"  budget:   {b.num_samples} trials x {b.max_epochs} epochs; ASHA grace "
                  f"{b.grace_period}, reduction {b.reduction_factor}; TPE startup "
                  f"{b.startup_trials}; {b.cpus_per_trial:g} CPU + {b.gpus_per_trial:g} GPU per trial",
                  f"  demo:     {d.num_samples} trials x {d.max_epochs} epochs",
                  f"  defaults: {experiment.defaults}",
                  f"  run:      python -m search.run {experiment.name} --demo"]
        if experiment.space is not None and experiment.space.__doc__:
            lines.append(f"  space:    {experiment.space.__doc__.strip()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.list", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?")
    args = p.parse_args(argv)
    if args.experiment:
        print(describe(get_experiment(args.experiment), full=True))
        return 0
    print("\n\n".join(describe(e, full=False) for e in EXPERIMENTS.values()))
    return 0


if __name__ == "__main__":
    run(main)
