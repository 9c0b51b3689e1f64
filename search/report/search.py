"""`report/index.html`: a self-contained page (images by relative path) about one run.

The run (experiment, command, budget, wall time), the best trials, the optimisation history,
parameter importances, each searched parameter against the metric (a best value at the edge of
its range is flagged), training curves of the best trials, the bag's confusion matrix and
per-class table, a Grad-CAM gallery per grade (right and wrong), and, where lesion masks exist,
the localisation scores beside a uniform map's.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix

from search.engine.run_folder import rank_trials
from search.engine.searcher import best_of, curve_of
from search.engine.study_asha import PRIOR_ATTR
from trainables.tasks import best_so_far
from trainables.train.reporting import short_node

EDGE = 0.1  # a best value in the outer 10% of a numeric range is flagged


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return f"{path.parent.name}/{path.name}" if path.parent.name != "report" else path.name


def edge_flags(study: optuna.Study) -> dict[str, str]:
    """Numeric parameters whose best value sits at the edge of the searched range."""
    flags: dict[str, str] = {}
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
            and not t.user_attrs.get(PRIOR_ATTR)]
    if not done:
        return flags
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    best = max(done, key=lambda t: sign * t.values[0])  # by the first objective (--objectives)
    for name, dist in best.distributions.items():
        numeric = optuna.distributions.FloatDistribution | optuna.distributions.IntDistribution
        if not isinstance(dist, numeric):
            continue
        lo, hi, value = float(dist.low), float(dist.high), float(best.params[name])
        if getattr(dist, "log", False):
            lo, hi, value = math.log(lo), math.log(hi), math.log(value)
        position = (value - lo) / (hi - lo) if hi > lo else 0.5
        if position <= EDGE or position >= 1 - EDGE:
            side = "low" if position <= EDGE else "high"
            flags[name] = (f"best {name} = {best.params[name]:.3g} is at the {side} edge of "
                           f"[{dist.low:.3g}, {dist.high:.3g}]: widen the range")
    return flags


def trial_value(t: optuna.trial.FrozenTrial, mode: str) -> float | None:
    """A trial's value as medtune ranks it: its best epoch (intermediate values; in a
    multi-objective study, the first objective's `curve`)."""
    curve = curve_of(t)
    if curve:
        return best_of(curve, mode)
    return float(t.values[0]) if t.values else None


def search_figures(study: optuna.Study, trials: pd.DataFrame, epochs: pd.DataFrame, metric: str,
                   mode: str, out: Path) -> dict[str, Any]:
    figs: dict[str, Any] = {}
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    own = [t for t in study.trials if not t.user_attrs.get(PRIOR_ATTR)]
    done = [t for t in own if t.state == optuna.trial.TrialState.COMPLETE]
    # ASHA's stops by their best epoch, as medtune ranks them (the study holds them PRUNED,
    # with their epochs; Optuna values a pruned trial by its last)
    stopped = [t for t in own if t.state == optuna.trial.TrialState.PRUNED
               and trial_value(t, mode) is not None]
    priors = [t for t in study.trials if t.user_attrs.get(PRIOR_ATTR) and t.state in finished
              and trial_value(t, mode) is not None]  # --warm-start's
    value = {t.number: float(trial_value(t, mode) or 0.0) for t in done + stopped + priors}
    kinds = [(done, "o", "ran its full length"), (stopped, "x", "stopped early (best epoch)"),
             (priors, ".", "earlier runs (warm start)")]
    if done or stopped:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for group, marker, label in kinds:
            if group:
                ax.plot([t.number for t in group], [value[t.number] for t in group], marker,
                        linestyle="none", label=label)
        if done:
            values = [value[t.number] for t in done]
            ax.step([t.number for t in done], best_so_far(values, mode), "-", where="post",
                    label="best so far (full length)")
        ax.set_xlabel("trial")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
        figs["history"] = _save(fig, out / "history.png")
    try:
        # Optuna 5 defaults to PED-ANOVA: ask for fANOVA, seeded, as the label says
        importances = optuna.importance.get_param_importances(  # on the first objective
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            target=(lambda t: t.values[0]) if len(study.directions) > 1 else None)
    except (RuntimeError, ValueError) as e:  # too few completed trials
        figs["importance_note"] = f"parameter importances need more completed trials ({e})"
    else:
        fig, ax = plt.subplots(figsize=(6, 0.4 + 0.35 * len(importances)))
        ax.barh(list(importances)[::-1], list(importances.values())[::-1])
        ax.set_xlabel("importance (fANOVA)")
        figs["importance"] = _save(fig, out / "importance.png")
    params = sorted({k for t in done + stopped for k in t.params})
    everyone = done + stopped + priors
    figs["params"] = []
    for name in params:
        fig, ax = plt.subplots(figsize=(3.6, 2.6))
        xs = [t.params[name] for t in everyone if name in t.params]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
        labels = sorted({str(x) for x in xs})
        for group, marker, label in kinds:
            have = [t for t in group if name in t.params]
            ax.plot([t.params[name] if numeric else labels.index(str(t.params[name]))
                     for t in have], [value[t.number] for t in have], marker,
                    linestyle="none", label=label)
        if numeric:
            dist = next(t.distributions[name] for t in everyone if name in t.distributions)
            if getattr(dist, "log", False):
                ax.set_xscale("log")
        else:
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        figs["params"].append(_save(fig, out / f"param_{name}.png"))
    top = rank_trials(trials, metric, mode).head(3)
    if len(top) and len(epochs):
        figs["curves"] = curves_figure(top, epochs, metric, out / "curves.png")
    return figs


def curves_figure(top: pd.DataFrame, epochs: pd.DataFrame, metric: str, out: Path) -> str:
    """The metric and the losses by epoch of the best trials; each trial's selected epoch is
    starred, and a phased trial's phases are shaded (those of the best trial)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for trial_id, best_epoch in zip(top["trial_id"], top["best_epoch"], strict=True):
        rows = epochs[epochs["trial_id"] == trial_id]
        line = axes[0].plot(rows["epoch"], rows[metric], "o-", label=trial_id)[0]
        axes[1].plot(rows["epoch"], rows["train/loss"], "o-", color=line.get_color())
        if "val/loss" in rows:
            axes[1].plot(rows["epoch"], rows["val/loss"], "s--", color=line.get_color())
        chosen = rows[rows["epoch"] == best_epoch]
        axes[0].plot(chosen["epoch"], chosen[metric], "*", ms=14, color=line.get_color(),
                     markeredgecolor="black")
    first = epochs[epochs["trial_id"] == top["trial_id"].iloc[0]]
    if "phase" in first and first["phase"].notna().any():
        for number, rows in first.groupby("phase"):
            for ax in axes:  # epoch e covers (e-1, e]: a phase spans its epochs' intervals
                ax.axvspan(rows["epoch"].min() - 1, rows["epoch"].max(), alpha=0.12,
                           color=("tab:blue", "tab:orange", "tab:green")[(int(number) - 1) % 3])
            axes[0].text(rows["epoch"].min() - 0.9, 1.01, f"phase {int(number)}", fontsize=7,
                         transform=axes[0].get_xaxis_transform())
    axes[0].set_ylabel(f"{metric} (star: selected epoch)")
    axes[1].set_ylabel("loss (train solid, validation dashed)")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    return _save(fig, out)


def confusion_figure(labels: np.ndarray, preds: np.ndarray, names: list[str], out: Path) -> str:
    matrix = confusion_matrix(labels, preds, labels=list(range(len(names))))
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ticks = [n.split()[0][:12] for n in names]
    ax.set_xticks(range(len(names)), ticks, rotation=45 if len(names) > 5 else 0, fontsize=7)
    ax.set_yticks(range(len(names)), ticks, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _save(fig, out / "confusion.png")


def roc_figure(labels: np.ndarray, probs: np.ndarray, names: list[str], out: Path,
               most: int = 6) -> str:
    """ROC curves (scikit-learn) of the `most` labels with the most positives in `labels`."""
    from sklearn.metrics import RocCurveDisplay

    from trainables.tasks.metrics import scorable_labels

    scorable = scorable_labels(labels)
    order = sorted(scorable, key=lambda j: -labels[:, j].sum())[:most]
    fig, ax = plt.subplots(figsize=(5, 4))
    for j in order:
        RocCurveDisplay.from_predictions(labels[:, j], probs[:, j], ax=ax,
                                         name=f"{names[j]} ({int(labels[:, j].sum())})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.legend(fontsize=7)
    return _save(fig, out / "roc.png")


def per_class_table(labels: np.ndarray, preds: np.ndarray, names: list[str]) -> pd.DataFrame:
    report = classification_report(labels, preds, labels=list(range(len(names))),
                                   target_names=names, output_dict=True, zero_division=0)
    return pd.DataFrame(report).T.loc[names, ["precision", "recall", "f1-score", "support"]]


def write_html(run_dir: Path, sections: list[tuple[str, str]]) -> Path:
    out = run_dir / "report" / "index.html"
    body = "\n".join(f'<section id="{section_id(title)}"><h2>{html.escape(title)}</h2>\n'
                     f"{content}</section>" for title, content in sections)
    out.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medtune: {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px;display:block;overflow-x:auto;max-width:100%}}
td,th{{border:1px solid #ccc;padding:3px 7px}}
img{{max-width:100%}}.grid img{{width:160px;margin:3px}}.flag{{color:#b00}}
figure{{display:inline-block;margin:4px;font-size:12px;text-align:center}}</style></head>
<body><h1>medtune run {html.escape(run_dir.name)}</h1>
{body}
</body></html>""")
    return out


def section_id(title: str) -> str:
    """A section's anchor: 'Best trials' -> best-trials."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def img(src: str, alt: str) -> str:
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'


def table(frame: pd.DataFrame, floatfmt: str = "{:.4f}", *, index: bool = True) -> str:
    return frame.to_html(float_format=lambda v: floatfmt.format(v), border=0, na_rep="",
                         index=index)


def run_summary(run_dir: Path) -> str:
    from search.engine.spec import RunSpec

    config = json.loads((run_dir / "config.json").read_text())
    s = RunSpec.from_dict(config["settings"], f"{run_dir}/config.json")
    return (f"<p>experiment <b>{html.escape(config['experiment'])}</b>, started "
            f"{html.escape(config['created'])}</p><p><code>{html.escape(' '.join(config['command']))}"
            f"</code></p><p>budget: {s.num_samples} trials of up to {s.max_epochs} epochs; "
            + (f"ASHA grace {s.grace_period}, reduction {s.reduction_factor}; "
               if s.scheduler == "asha" else "no early stopping (fifo); ")
            + (f"TPE startup {s.startup_trials}; " if s.sampler == "tpe" else "random sampler; ")
            + f"seed {s.seed}</p>")


def write_report(run_dir: Path, *, study: optuna.Study, metric: str, mode: str,
                 final_sections: list[tuple[str, str]],
                 first_sections: list[tuple[str, str]] | None = None) -> Path:
    """The whole page: `first_sections` (what the search bought), search sections from the
    run folder, then `final_sections`."""
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    listed = pd.read_parquet(run_dir / "trials.parquet")
    trials = listed[listed["status"] != "prior"]  # a warm start's priors are not this run's
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    figs = search_figures(study, trials, epochs, metric, mode, out)
    flags = edge_flags(study)
    minutes = trials["seconds"].sum() / 60
    # first trial's start to the last one's end (an interrupted search counts its pause too)
    wall = float(trials["finished"].max() - trials["started"].min()) / 60 \
        if trials["finished"].notna().any() else 0.0
    best = rank_trials(trials, metric, mode).head(10)
    priors = len(listed) - len(trials)
    sections = [("Run", run_summary(run_dir) + f"<p>{len(trials)} trials in {wall:.1f} minutes "
                 f"of wall time ({minutes:.1f} trial-minutes)"
                 + (f"; {priors} prior trial(s) of earlier runs (--warm-start) joined the study"
                    if priors else "") + "</p>"),
                ("Best trials", table(shown(best), index=False)),
                ("Optimisation history", img(figs["history"], "optimisation history")
                 if "history" in figs else "<p>no trial with a result</p>"),
                ("Parameter importances", img(figs["importance"], "parameter importances")
                 if "importance" in figs else f"<p>{html.escape(figs['importance_note'])}</p>"),
                ("Each parameter against the metric",
                 "".join(f'<p class="flag">{html.escape(f)}</p>' for f in flags.values())
                 + "".join(img(p, p) for p in figs["params"])),
                ("Training curves of the best trials", img(figs["curves"], "training curves")
                 if "curves" in figs else "<p>no epochs recorded</p>")]
    return write_html(run_dir, (first_sections or []) + sections + final_sections)


def shown(trials: pd.DataFrame) -> pd.DataFrame:
    """The best-trials table as the page shows it, narrow enough for the page: node ids
    short, a key the trial's space did not set empty; no error text, times, node type or
    hours (trials.parquet has them all, the Cost section the hours)."""
    out = trials.drop(columns=["error", "started", "finished", "node_type", "gpu_hours",
                               "cpu_hours"], errors="ignore").reset_index(drop=True)
    if "node_id" in out:
        out["node_id"] = out["node_id"].map(lambda v: short_node(v) if isinstance(v, str) else v)
    for column in out:  # floats: the table's na_rep; None and <NA> elsewhere
        if not pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].astype(object).where(out[column].notna(), "")
    return out


def pareto_section(run_dir: Path, study: optuna.Study, summary: dict[str, Any]) -> str:
    """--objectives: every full-length trial on the first two objectives, the Pareto front
    (best/pareto.json) joined up, the final step's members ringed; the front as a table."""
    front = json.loads((run_dir / "best" / "pareto.json").read_text())
    names = list(front[0]["objectives"]) if front else []
    members = {m["trial_id"] for m in summary["members"]}
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
            and t.values and not t.user_attrs.get(PRIOR_ATTR)]
    parts = []
    if len(names) >= 2 and done:
        fig, ax = plt.subplots(figsize=(5.4, 3.6))
        ax.plot([t.values[1] for t in done], [t.values[0] for t in done], "o", color="0.7",
                label="full-length trials")
        line = sorted((r["objectives"][names[1]], r["objectives"][names[0]]) for r in front)
        ax.plot(*zip(*line, strict=True), "o-", label="Pareto front")
        chosen = [r for r in front if r["trial_id"] in members]
        if chosen:
            ax.plot([r["objectives"][names[1]] for r in chosen],
                    [r["objectives"][names[0]] for r in chosen], "o", ms=14, mfc="none",
                    color="C3", label="final members")
        ax.set_xlabel(names[1])
        ax.set_ylabel(names[0])
        ax.legend(fontsize=7)
        parts.append(img(_save(fig, run_dir / "report" / "pareto.png"), "Pareto front"))
    picked = f" (--pick {html.escape(summary['pick'])})" if summary.get("pick") else ""
    rows = pd.DataFrame([{"trial_id": r["trial_id"], **r["objectives"],
                          "member": "yes" if r["trial_id"] in members else ""} for r in front])
    parts.append(f"<p>{len(front)} trial(s) on the front of {len(done)} full-length trial(s); "
                 f"the members{picked}: {', '.join(sorted(members))}</p>" + table(rows))
    return "".join(parts)
