"""One trial without Ray: the same trainable Ray Tune runs, on the command line.

    python -m search.train deepdrid_finetune --demo
    python -m search.train deepdrid_attention --demo --epochs 3 --set heads=8 --set lr=1e-3
    python -m search.train deepdrid_finetune --data /data/DeepDRiD --out runs/r18
    python -m search.train deepdrid_finetune --demo --resume runs/r18   # continue a stopped run

Prints one line per epoch and writes OUT/config.json (the resolved config), OUT/metrics.json
(one dict per epoch) and OUT/checkpoints/{best,last}/ (safetensors).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from search.cli import experiment_parser, positive_int, run, setup_logging
from spaces import get_experiment
from trainables.data.cache import cache_root
from trainables.errors import ConfigError
from trainables.tasks import best_by
from trainables.train.config import parse_overrides
from trainables.train.reporting import LocalReporter, local_run


def main(argv: list[str] | None = None) -> int:
    parser = experiment_parser("python -m search.train", __doc__,
                               demo_help="generated data and demo settings", data_help="dataset root")
    parser.add_argument("--epochs", type=positive_int)
    parser.add_argument("--out", type=Path, help="output folder (default results/<exp>/train-<time>)")
    parser.add_argument("--resume", type=Path, metavar="DIR",
                        help="a checkpoint folder or an earlier --out folder to continue")
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    experiment = get_experiment(args.experiment)
    overrides = parse_overrides(args.overrides)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.data:
        overrides["data"] = args.data
    cfg = experiment.config(demo=args.demo, overrides=overrides)
    if "epochs" in overrides:
        cfg.require_epochs(int(overrides["epochs"]),
                           "--epochs" if args.epochs is not None else "--set epochs=")
    if args.demo:
        cfg = cfg.replace(**experiment.demo_paths(cache_root(cfg.cache_dir), cfg.to_dict()))
    if not cfg.data:
        raise ConfigError("no dataset: pass --data DIR or --demo")
    experiment.check(cfg)
    from trainables.data.trial_data import resolve_data

    cfg, _ = resolve_data(cfg)  # the class count comes from the data
    out = args.out or Path("results") / experiment.name / time.strftime("train-%Y%m%d-%H%M%S")
    reporter = LocalReporter(out, metric=experiment.metric, mode=experiment.mode,
                             resume=args.resume, echo=lambda line: print(line, flush=True))
    print(f"{experiment.name}: {cfg.model} ({cfg.weights}) on {cfg.data} -> {out}", flush=True)
    with local_run(reporter):
        experiment.trainable()(cfg.to_dict())
    best = _best(reporter.history, experiment.metric, experiment.mode)
    if best:
        print(f"best {experiment.metric} {best[experiment.metric]:.4f} at epoch "
              f"{int(best['epoch'])}; results in {out}")
    (out / "summary.json").write_text(json.dumps({"experiment": experiment.name, "best": best},
                                                 indent=1))
    return 0


def _best(history: list[dict[str, float]], metric: str, mode: str) -> dict[str, float] | None:
    rows = [h for h in history if metric in h]
    if not rows:
        return None
    return best_by(rows, mode, key=lambda h: h[metric])


if __name__ == "__main__":
    run(main)
