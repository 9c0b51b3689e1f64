"""`python -m search.bench gain`: the final step's bootstrap intervals of what the search bought
(search/engine/gain.py), every draw of every model scored at once against scikit-learn called on each
draw's rows, on the same draws of the same predictions.

The predictions are random, sized like a real final step: the defaults and three members and
the bag (7 models) on a validation split of 400 patients with 2 images each (QWK, 5 grades;
1000 draws), and of 640 images with 46 labels (macro AUROC, RFMiD's labels; 300 draws);
--quick: a tenth of the images, 5 draws.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from search.bench.process import measure
from search.bench.rows import row

MODELS = 7  # 3 defaults, 3 members, the bag


def _grades(rng: np.random.Generator, rows: int, width: int) -> tuple[np.ndarray, list[np.ndarray]]:
    grades = rng.integers(0, width, rows)
    return grades, [np.eye(width)[grades] * 0.5 + rng.random((rows, width)) for _ in range(MODELS)]


def _labels(rng: np.random.Generator, rows: int, width: int) -> tuple[np.ndarray, list[np.ndarray]]:
    labels = (rng.random((rows, width)) < 0.1).astype(np.float32)
    return labels, [np.clip(labels * 0.3 + rng.random((rows, width)), 0, 1) for _ in range(MODELS)]


# task kind: (its metric, rows, classes or labels and what they are, rows per patient, draws,
# the random predictions)
CASES: dict[str, tuple[str, int, int, str, int, int, Any]] = {
    "grading": ("val/kappa", 800, 5, "grades", 2, 1000, _grades),
    # scikit-learn's 46-label AUROC on each of 1000 draws of 7 models takes minutes a run
    "multilabel": ("val/auroc_macro", 640, 46, "labels", 1, 300, _labels),
}


def _measure(p: dict[str, Any], *, at_once: bool) -> dict[str, Any]:
    import trainables.tasks.metrics  # noqa: F401  (scikit-learn imported before the clock starts)
    from search.engine.gain import draw_weights, resampling_units
    from trainables.tasks import task_of

    metric, rows, width, _, per_patient, _, predictions = CASES[p["kind"]]
    task = task_of(p["kind"], metric)
    rows = rows if not p.get("quick") else rows // 10
    labels, probs = predictions(np.random.default_rng(0), rows, width)
    groups, _ = resampling_units(np.arange(rows) // per_patient)
    score = task.resampled if at_once else task.per_draw
    started = time.perf_counter()
    weights = draw_weights(groups, rows, p["draws"], np.random.default_rng(0))
    values = np.stack([score(labels, m, weights) for m in probs], axis=1)
    return {"seconds": time.perf_counter() - started, "draws": len(values), "images": rows,
            "checksum": float(np.nansum(values))}


def measure_gain_ours(p: dict[str, Any]) -> dict[str, Any]:
    return _measure(p, at_once=True)


def measure_gain_baseline(p: dict[str, Any]) -> dict[str, Any]:
    return _measure(p, at_once=False)


def bench_gain(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    rows = []
    from trainables.tasks import task_of

    for kind, (metric, _, width, unit, _, draws, _) in CASES.items():
        draws = 5 if params.get("quick") else draws
        p = {"kind": kind, "draws": draws, "quick": params.get("quick", False)}
        ours, base = [], []
        for i in range(repeats):  # alternate, so drift on the machine hits both sides alike
            ours.append(measure("gain-ours", p))
            base.append(measure("gain-baseline", p))
            echo(f"  gain {kind}: run {i + 1} of {repeats}")
        if abs(ours[0]["checksum"] - base[0]["checksum"]) > 1e-6 * abs(base[0]["checksum"]):
            raise RuntimeError(f"gain {kind}: the two ways score the draws differently "
                               f"({ours[0]['checksum']} against {base[0]['checksum']})")
        name = task_of(kind, metric).name
        rows.append(row("gain", f"s per interval table, {name} ({width} {unit}, {ours[0]['images']} images, "
                                f"{MODELS} models, {draws} draws)",
                        float(np.median([r["seconds"] for r in ours])),
                        float(np.median([r["seconds"] for r in base])), False))
    return rows
