"""`python -m search.bench demos`: the numbers the README quotes from its demos, recorded.

Each demo runs as the README runs it (`python -m search.run EXPERIMENT --demo`, the final step
included, or `python -m search.train idrid_two_phase --demo`), in a fresh process on a local
Ray of its own, W&B offline; its rows are read from what it wrote (`final/metrics.json`, the
run folder's size, search.train's `metrics.json`) and its wall minutes. `--quick` runs each with
`--smoke-test` (the plumbing only: its numbers mean nothing).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from search.bench.process import run_module
from search.bench.rows import row, value_row

DEMOS = ("deepdrid_attention", "deepdrid_two_stage", "deepdrid_ensemble", "chestxray_staged",
         "idrid_two_phase")
TRAINED_ALONE = ("idrid_two_phase",)  # the README shows it with search.train --demo
SPLITS = {"val": "validation", "test": "test"}


def run_demo(name: str, folder: Path, *, quick: bool) -> tuple[Path, float]:
    """Run one demo into `folder`; its run folder (or search.train's folder) and wall minutes."""
    if name in TRAINED_ALONE:
        out = folder / name
        argv = ["search.train", name, "--demo", "--out", str(out)]
        argv += ["--epochs", "2"] if quick else []
    else:
        out = folder / name / "demo"
        argv = ["search.run", name, "--demo", "--results", str(folder), "--name", "demo"]
        argv += ["--smoke-test"] if quick else []
    env = {**os.environ, "RAY_ADDRESS": "local", "WANDB_MODE": "offline",
           "RAY_AIR_NEW_OUTPUT": "0"}
    env.pop("WANDB_API_KEY", None)
    started = time.monotonic()
    run_module(f"demo {name}", argv, env)
    return out, (time.monotonic() - started) / 60


def _metric(summary: dict[str, Any]) -> tuple[str, str]:
    """The scores' key of the experiment's metric ("val/kappa" -> "kappa") and its name
    ("QWK"), as the task writes it."""
    from trainables.tasks import task_of

    task = task_of(summary["task"], summary["metric"])
    return task.metric.split("/", 1)[1], task.name


def demo_rows(name: str, out: Path, minutes: float) -> list[dict[str, Any]]:
    """The rows of one finished demo, from the files it wrote."""
    s = "demos"
    if name in TRAINED_ALONE:
        from spaces import get_experiment

        history = json.loads((out / "metrics.json").read_text())
        metric = get_experiment(name).metric
        by_phase: dict[int, list[dict[str, Any]]] = {}
        for epoch in history:
            by_phase.setdefault(int(epoch.get("phase", 1)), []).append(epoch)
        first, last = by_phase[min(by_phase)], by_phase[max(by_phase)]
        best_first = max(first, key=lambda e: e[metric])
        return [
            row(s, f"{name} (search.train): phase 2's best validation QWK vs phase 1's best (epoch "
                f"{int(best_first['epoch'])} of {len(first)}, where phase 2 starts)",
                max(e[metric] for e in last), best_first[metric], higher_is_better=True),
            value_row(s, f"{name} (search.train): minutes", minutes)]
    from search.engine.storage import RunStore

    summary = json.loads((out / "final" / "metrics.json").read_text())
    key, metric = _metric(summary)
    rows = [value_row(s, f"{name}: minutes, search and final step", minutes),
            value_row(s, f"{name}: run folder MB", sum(RunStore(out).sizes().values()) / 1e6)]
    gain = summary.get("gain") or {}
    for split in ("val", "test"):
        if split in gain:
            g, seeds = gain[split], len(gain[split]["defaults"]["values"])
            rows.append(row(
                s, f"{name}: the bag's {SPLITS[split]} {metric} vs the defaults' mean ({seeds} "
                f"seeds); gain {g['bag']['gain']:+.4f}, 95% [{g['bag']['low']:+.4f}, "
                f"{g['bag']['high']:+.4f}]", g["bag"]["value"], g["defaults"]["mean"],
                higher_is_better=True))
    if "gain" not in summary:
        rows += [value_row(s, f"{name}: the bag's {SPLITS[split]} {metric}",
                           summary["bag"][split][key])
                 for split in ("val", "test") if split in summary["bag"]]
    two = summary.get("two_stage")
    if two:
        if "value" in two["stage1"]:
            rows += [value_row(s, f"{name}: stage 1's {metric} on its own validation",
                               two["stage1"]["value"]),
                     value_row(s, f"{name}: stage 1's minutes (built once)",
                               two["stage1"]["minutes"])]
        if "val" in two["baseline"]:
            rows.append(row(s, f"{name}: stage 2's member 1, validation {metric} vs the single-stage "
                            "baseline (same config, seed and sample)",
                            two["stage2_member_1"]["val"][key], two["baseline"]["val"][key],
                            higher_is_better=True))
    fair = summary.get("cross_fitted")
    if fair:
        rows += [
            row(s, f"{name}: greedy bag vs top-k bag, validation {metric} (greedy chosen there)",
                summary["bag"]["val"][key], summary["top_k_bag"]["val"][key],
                higher_is_better=True),
            row(s, f"{name}: the same, greedy cross-fitted; difference 95% "
                f"[{fair['greedy_over_top_k']['low']:+.4f}, "
                f"{fair['greedy_over_top_k']['high']:+.4f}]",
                fair["greedy"]["value"], fair["top_k"]["value"], higher_is_better=True)]
    return rows


def bench_demos(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="medtune-demos-") as folder:
        for name in DEMOS:
            echo(f"  demos: {name}")
            out, minutes = run_demo(name, Path(folder), quick=params["quick"])
            rows += demo_rows(name, out, minutes)
    return rows
