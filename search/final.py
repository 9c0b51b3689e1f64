"""The final step of a search: retrain the best configurations, bag them, write the submission.

    python -m search.final results/deepdrid_attention/<run>              # after search.run
    python -m search.final RUN --top-k 5 --method vote --no-tta
    python -m search.final s3://bucket/medtune/deepdrid_attention/<run>  # staged, then uploaded

Each of the top k configurations (best/top_k.json) is retrained at full length on its own
bootstrap resample of the training set with its own seed; their class probabilities are bagged
(mean or vote) and the bag is reported against each member on validation. The test split is
predicted (flip TTA by default) into submission/test_predictions.csv (ID,TARGET in test.csv
order) and a CSV of probabilities per member.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from search.bagging import METHODS, bag, write_predictions
from search.cli import run, setup_logging
from search.environment import package_versions
from search.storage import RunStore
from spaces import get_experiment
from trainables.config import TrainConfig
from trainables.errors import ConfigError
from trainables.reporting import LocalReporter

METRIC_KEYS = ("kappa", "accuracy", "f1_macro")


def member_config(record: dict[str, Any], index: int, epochs: int) -> TrainConfig:
    """The i-th member: the trial's config at full length, its own seed and bootstrap sample."""
    base = TrainConfig.from_dict(record["config"])
    return base.replace(epochs=epochs, seed=base.seed + 1 + index, bootstrap=base.seed + index,
                        max_eval_batches=0)


def train_member(cfg: TrainConfig, folder: Path, *, tta: bool, echo: Any) -> dict[str, Any]:
    """Train one member; save its weights and metadata; return its val and test probabilities."""
    import timm

    from trainables.augment import BatchAugment
    from trainables.cache import fingerprint
    from trainables.checkpoint import save_model_weights
    from trainables.grading import fit, load_data
    from trainables.loop import plan_runtime, predict

    reporter = LocalReporter(folder, echo=echo)
    data = load_data(cfg)
    model = fit(cfg, reporter, data=data)
    runtime = plan_runtime(cfg)
    data_cfg = timm.data.resolve_model_data_config(model.backbone)
    mean, std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    augment = BatchAugment("none", mean, std, runtime.device, runtime.channels_last)
    probs = {split: predict(model, data.images[split], cfg=cfg, augment=augment,
                            runtime=runtime, tta=tta, limit=0)
             for split in ("val", "test") if split in data.images}
    save_model_weights(folder / "model.safetensors", model, cfg.to_dict())
    (folder / "metadata.json").write_text(json.dumps({
        "format_version": 1, "versions": package_versions(),
        "class_names": data.index.class_names, "num_classes": cfg.num_classes,
        "input": {"size": cfg.image_size, "channels": 3, "mean": mean, "std": std,
                  "preprocess": cfg.preprocess, "layout": "RGB, channels first, [0,1] then "
                  "normalised"},
        "model": cfg.model, "seed": cfg.seed, "bootstrap": cfg.bootstrap,
        "data_fingerprint": fingerprint(data.index), "config": cfg.to_dict(),
    }, indent=1))
    return {"probs": probs, "index": data.index, "history": reporter.history,
            "val_images": data.images["val"]}


def run_final(run_dir: Path, *, top_k: int | None = None, method: str = "mean",
              tta: bool = True, echo: Any = print) -> dict[str, Any]:
    """Retrain, bag and predict for the run in `run_dir`; returns the final metrics."""
    from trainables.metrics import grading_metrics

    top_file = run_dir / "best" / "top_k.json"
    if not top_file.is_file():
        raise ConfigError(f"{top_file} not found: finish the search first (python -m search.run)")
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    run_config = json.loads((run_dir / "config.json").read_text())
    experiment = get_experiment(run_config["experiment"])
    records = json.loads(top_file.read_text())[: top_k or run_config["settings"]["top_k"]]
    epochs = int(run_config["settings"]["max_epochs"])
    final, started = run_dir / "final", time.monotonic()
    members, metrics = [], []
    for i, record in enumerate(records):
        cfg = member_config(record, i, epochs)
        echo(f"member {i + 1}/{len(records)}: trial {record['trial_id']} ({cfg.model}), "
             f"{epochs} epochs, seed {cfg.seed}, bootstrap sample {cfg.bootstrap}")
        member = train_member(cfg, final / f"member_{i + 1}", tta=tta, echo=echo)
        members.append(member)
    index = members[0]["index"]
    val_labels = index.split("val")["label"].to_numpy()
    for member in members:
        metrics.append(grading_metrics(val_labels, member["probs"]["val"]))
    bag_val = bag([m["probs"]["val"] for m in members], method)
    bag_metrics = grading_metrics(val_labels, bag_val)
    spread = {k: float(np.std([m[k] for m in metrics])) for k in METRIC_KEYS}
    summary = {
        "experiment": experiment.name, "run_id": run_dir.name, "method": method, "tta": tta,
        "members": [{"trial_id": r["trial_id"], "seed": member_config(r, i, epochs).seed,
                     "val": m} for i, (r, m) in enumerate(zip(records, metrics, strict=True))],
        "bag": {"val": bag_metrics}, "spread": spread,
        "minutes": round((time.monotonic() - started) / 60, 2),
    }
    _write_submission(run_dir / "submission", index, members, method)
    np.save(final / "val_bag_probs.npy", bag_val)
    echo(_table(summary))
    report, localisation = _report(run_dir, experiment, summary, index,
                                   members[0]["val_images"], bag_val)
    summary["localisation"] = localisation
    (final / "metrics.json").write_text(json.dumps(summary, indent=1))
    if localisation and localisation.get("images"):
        echo(f"Grad-CAM localisation on {localisation['images']} val images with lesions: "
             f"energy in lesions {localisation['energy_in_mask']:.3f} (uniform "
             f"{localisation['energy_uniform']:.3f}), pointing game "
             f"{localisation['pointing_hit_rate']:.3f} (uniform {localisation['pointing_uniform']:.3f})")
    echo(f"report: {report}")
    if run_config["settings"].get("wandb"):
        echo(log_to_wandb(run_dir, summary))
    return summary


def log_to_wandb(run_dir: Path, summary: dict[str, Any]) -> str:
    """The final step's tables and images as one W&B run in the search's group."""
    import os

    try:
        import wandb
    except ImportError:
        return "W&B: off (wandb is not installed)"
    import pandas as pd

    online = bool(os.environ.get("WANDB_API_KEY")) and os.environ.get("WANDB_MODE") != "offline"
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "medtune"), group=run_dir.name,
                     name=f"{run_dir.name}-final", job_type="final", dir=str(run_dir.resolve()),
                     mode="online" if online else "offline",
                     config={"method": summary["method"], "tta": summary["tta"],
                             "members": [m["trial_id"] for m in summary["members"]]})
    members = pd.DataFrame([{"member": f"member {i + 1}", "trial_id": m["trial_id"], **m["val"]}
                            for i, m in enumerate(summary["members"])]
                           + [{"member": "bag", "trial_id": "", **summary["bag"]["val"]}])
    report = run_dir / "report"
    logged: dict[str, Any] = {
        "final/members": wandb.Table(dataframe=members),
        **{f"final/bag_{k}": v for k, v in summary["bag"]["val"].items()},
        "final/confusion_matrix": wandb.Image(str(report / "confusion.png")),
        "final/gradcam": [wandb.Image(str(p), caption=p.stem)
                          for p in sorted((report / "gradcam").glob("*.png"))],
        "final/submission": wandb.Table(dataframe=pd.read_csv(
            run_dir / "submission" / "test_predictions.csv")),
    }
    if summary.get("localisation") and summary["localisation"].get("images"):
        logged.update({f"final/localisation_{k}": v for k, v in summary["localisation"].items()})
    run.log(logged)
    run.finish()
    return f"W&B: final run logged {'online' if online else 'offline, in ' + str(run_dir / 'wandb')}"


def _report(run_dir: Path, experiment: Any, summary: dict[str, Any], index: Any,
            val_images: np.ndarray, bag_val: np.ndarray) -> tuple[Path, dict[str, Any] | None]:
    import optuna

    from search.driver import study_url
    from search.final_report import final_sections
    from search.report import write_report

    sections, localisation = final_sections(run_dir, summary, index, val_images, bag_val)
    study = optuna.load_study(study_name=run_dir.name, storage=study_url(run_dir))
    path = write_report(run_dir, study=study, metric=experiment.metric, mode=experiment.mode,
                        final_sections=sections)
    return path, localisation


def _write_submission(folder: Path, index: Any, members: list[dict[str, Any]],
                      method: str) -> None:
    test = index.split("test")
    ids = [Path(p).name for p in test["path"]]  # Kaggle's ID is the image file name
    for i, member in enumerate(members):
        probs = member["probs"]["test"]
        write_predictions(folder / f"member_{i + 1}.csv", ids, probs, probs.argmax(axis=1))
    bagged = bag([m["probs"]["test"] for m in members], method)
    write_predictions(folder / "test_predictions.csv", ids, None, bagged.argmax(axis=1))


def _table(summary: dict[str, Any]) -> str:
    rows = [f"{'':14}{'QWK':>8}{'accuracy':>10}{'macro F1':>10}"]
    for i, m in enumerate(summary["members"]):
        v = m["val"]
        rows.append(f"member {i + 1:<7}{v['kappa']:8.4f}{v['accuracy']:10.4f}{v['f1_macro']:10.4f}")
    b = summary["bag"]["val"]
    rows.append(f"{'bag (' + summary['method'] + ')':14}{b['kappa']:8.4f}{b['accuracy']:10.4f}"
                f"{b['f1_macro']:10.4f}")
    s = summary["spread"]
    rows.append(f"{'member spread':14}{s['kappa']:8.4f}{s['accuracy']:10.4f}{s['f1_macro']:10.4f}")
    return "validation (bag against members):\n  " + "\n  ".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.final", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder of python -m search.run (a path or a URI)")
    p.add_argument("--top-k", type=int, help="members (default: the experiment's, 3)")
    p.add_argument("--method", choices=METHODS, default="mean")
    p.add_argument("--no-tta", action="store_true", help="no flip test-time augmentation")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    store = RunStore.of(args.run)
    store.pull()  # a run folder on an object store: into its local stage
    run_final(store.local, top_k=args.top_k, method=args.method, tta=not args.no_tta,
              echo=lambda line: print(line, flush=True))
    store.push()
    print(f"submission: {store.location}/submission/test_predictions.csv")
    return 0


if __name__ == "__main__":
    run(main)
