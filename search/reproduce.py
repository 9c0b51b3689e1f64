"""Retrain one trial of a search outside Ray and compare with what the search recorded.

    python -m search.reproduce results/deepdrid_attention/<run>/best/config.json
    python -m search.reproduce RUN/best/top_k.json --rank 2        # the second best
    python -m search.reproduce RUN/best/config.json --tolerance 0.02 --out runs/check
    python -m search.reproduce s3://bucket/medtune/deepdrid_attention/<run>/best/config.json

It trains the trial's config (same seed, same schedule) up to the recorded epoch with the
trial's CPU thread count, prints the reproduced metric and validation loss beside the recorded
ones, and exits 1 when the metric differs by more than --tolerance (default 0.01) or the loss
by more than --loss-tolerance, relative (default 0.001). The loss catches what a metric can
hide: two models that predict one class score QWK 0 alike.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from search.cli import nonnegative_float, positive_int, run, setup_logging, verbosity
from search.engine.storage import RunStore, is_uri, read_json
from spaces import get_experiment
from trainables.errors import ConfigError
from trainables.train.config import TrainConfig
from trainables.train.reporting import LocalReporter


def load_record(path: Path, rank: int) -> dict:
    expected = "expected RUN/best/config.json or top_k.json"
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a trial's record ({expected})")
    if not path.is_file():
        raise ConfigError(f"{path} not found ({expected})")
    data = read_json(path, str(path), f"; {expected}")
    records = data if isinstance(data, list) else [data]
    if not 1 <= rank <= len(records):
        raise ConfigError(f"--rank {rank}: {path} holds {len(records)} trial(s)")
    record = records[rank - 1]
    if not isinstance(record, dict):
        raise ConfigError(f"{path} is not a search record ({expected})")
    missing = {"experiment", "config", "metric", "value", "epoch"} - set(record)
    if missing:
        raise ConfigError(f"{path} is not a search record: missing {', '.join(sorted(missing))}")
    return record


def _record_location(record: str) -> tuple[RunStore | None, Path]:
    """(the run folder on an object store, staged; or None) and the record's local path."""
    if not is_uri(record):
        return None, Path(record)
    run_uri, sep, name = record.rpartition("/best/")
    if not sep:
        raise ConfigError(f"{record}: expected RUN/best/config.json or RUN/best/top_k.json")
    store = RunStore.of(run_uri)
    store.pull()
    return store, store.local / "best" / name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("record", help="best/config.json or best/top_k.json of a run (a path or a URI)")
    p.add_argument("--rank", type=positive_int, default=1, help="which entry of a top_k.json (1 = best)")
    p.add_argument("--tolerance", type=nonnegative_float, default=0.01,
                   help="largest accepted difference of the metric")
    p.add_argument("--loss-tolerance", type=nonnegative_float, default=1e-3,
                   help="largest accepted relative difference of the validation loss")
    p.add_argument("--out", type=Path, help="default: RUN/reproduce/<trial_id>")
    verbosity(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    store, path = _record_location(args.record)
    record = load_record(path, args.rank)
    experiment = get_experiment(record["experiment"])
    cfg = TrainConfig.from_dict(record["config"])
    out = args.out or path.parent.parent / "reproduce" / str(record.get("trial_id", "trial"))

    import torch

    from search.engine.run_folder import check_split
    from trainables.data.trial_data import resolve_data

    check_split(path.parent.parent, resolve_data(cfg)[1])  # the search's split, if it drew one
    # Ray gives a trial as many threads as CPUs; the same count gives the same float sums
    torch.set_num_threads(max(1, int(record.get("cpus_per_trial", 1))))
    metric, epoch = record["metric"], int(record["epoch"])
    print(f"reproducing trial {record.get('trial_id')} of {record.get('run_id')}: {cfg.model}, "
          f"{epoch} of {cfg.epochs} epochs -> {out}", flush=True)
    reporter = LocalReporter(out, metric=metric, mode=record.get("mode", experiment.mode),
                             echo=lambda line: print(line, flush=True))
    experiment.fit()(cfg, reporter, until_epoch=epoch)
    row = next(h for h in reporter.history if int(h["epoch"]) == epoch)
    reproduced, recorded = float(row[metric]), float(record["value"])
    diff = abs(reproduced - recorded)
    same = diff <= args.tolerance
    verdict = "OK" if same else f"DIFFERS by more than {args.tolerance}"
    print(f"{metric} at epoch {epoch}: reproduced {reproduced:.4f}, recorded {recorded:.4f} "
          f"(difference {diff:.4f}): {verdict}")
    loss_diff = None
    if record.get("val_loss") is not None:  # records written before it was kept lack it
        recorded_loss, reproduced_loss = float(record["val_loss"]), float(row["val/loss"])
        loss_diff = abs(reproduced_loss - recorded_loss) / max(abs(recorded_loss), 1e-12)
        loss_ok = loss_diff <= args.loss_tolerance
        same = same and loss_ok
        print(f"val loss at epoch {epoch}: reproduced {reproduced_loss:.6f}, recorded "
              f"{recorded_loss:.6f} (relative difference {loss_diff:.2e}): "
              + ("OK" if loss_ok else f"DIFFERS by more than {args.loss_tolerance:g}"))
    (out / "reproduce.json").write_text(json.dumps({
        "record": str(args.record), "metric": metric, "epoch": epoch, "recorded": recorded,
        "reproduced": reproduced, "difference": diff, "tolerance": args.tolerance,
        "loss_difference": loss_diff, "loss_tolerance": args.loss_tolerance,
        "epoch_row": row}, indent=1))
    if store is not None and args.out is None:
        store.push("reproduce")
    return 0 if same else 1


if __name__ == "__main__":
    run(main)
