"""The final step's part of the report, as the task asks: for grades and classes the bag's
confusion matrix, per-class table, a Grad-CAM gallery per class (right and wrong predictions)
and lesion localisation; for multi-label data a per-label table, ROC curves and a Grad-CAM
gallery per label."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image

from search.engine.final import FinalPlan
from search.engine.gain import describe_cross_fitted, describe_gain, verdict
from search.engine.storage import RunStore, is_uri
from search.engine.wandb_log import log_final
from search.report.search import confusion_figure, img, per_class_table, roc_figure, table
from trainables.data.datasets import ImageIndex
from trainables.model.explain import normalise
from trainables.tasks import Task
from trainables.train.reporting import short_node

PER_CELL = 2  # images per class (or label) and outcome in the gallery


def load_member(folder: Path) -> tuple[Any, dict[str, Any]]:
    """A member rebuilt from its model file (no hub access), and its metadata.json."""
    from trainables.model.models import load_model

    model, _ = load_model(folder / "model.safetensors")
    return model, json.loads((folder / "metadata.json").read_text())


def _normalise(images: np.ndarray, meta: dict[str, Any]) -> torch.Tensor:
    return normalise(images, tuple(meta["input"]["mean"]), tuple(meta["input"]["std"]))


def _gallery_images(out: Path, val: Any, val_images: np.ndarray, model: Any,
                    meta: dict[str, Any], picks: list[tuple[int, int, str]]) -> list[str]:
    """Grad-CAM overlays of (row, class, caption) picks, saved; a <figure> each."""
    from trainables.model.explain import grad_cam

    if not picks:
        return []
    cams = grad_cam(model, _normalise(val_images[[i for i, _, _ in picks]], meta),
                    [c for _, c, _ in picks])
    figures = []
    for (i, target, caption), cam in zip(picks, cams, strict=True):
        rgb = val_images[i].astype(np.float32) / 255
        rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb
        name = f"val_{i}_cam{target}.png"
        Image.fromarray(show_cam_on_image(rgb, cam, use_rgb=True)).save(out / name)
        figures.append(f"<figure>{img('gradcam/' + name, name)}<figcaption>"
                       f"{html.escape(str(val['image_id'][i]))}: {html.escape(caption)}"
                       "</figcaption></figure>")
    return figures


def gallery_and_localisation(run_dir: Path, member: int, index: ImageIndex,
                             val_images: np.ndarray,
                             bag_probs: np.ndarray) -> tuple[str, dict[str, Any] | None]:
    """Grad-CAM of one member for right and wrong bag predictions per class; localisation
    scores over every validation image with a lesion mask (the DeepDRiD demo writes them)."""
    from trainables.model.explain import localise_split

    model, meta = load_member(run_dir / "final" / f"member_{member}")
    out = run_dir / "report" / "gradcam"
    out.mkdir(parents=True, exist_ok=True)
    val = index.split("val")
    labels, preds = val["label"].to_numpy(), bag_probs.argmax(axis=1)
    names = index.class_names
    rows = []
    for c in range(meta["num_classes"]):
        cells = []
        for chosen in (labels == preds, labels != preds):
            picks = [(int(i), int(preds[i]), f"true {names[labels[i]]}, predicted "
                      f"{names[preds[i]]}") for i in np.flatnonzero((labels == c) & chosen)[:PER_CELL]]
            cells.append("".join(_gallery_images(out, val, val_images, model, meta, picks)) or "-")
        rows.append(f"<tr><th>{html.escape(names[c])}</th><td>{cells[0]}</td><td>{cells[1]}</td></tr>")
    gallery = (f"<p>Grad-CAM of member {member} ({html.escape(meta['model'])}) for the bag's "
               f"predicted class, on the validation split.</p><table class='grid'><tr><th></th>"
               f"<th>right</th><th>wrong</th></tr>{''.join(rows)}</table>")
    scores = localise_split(model, index, val_images, split="val", size=meta["input"]["size"],
                            preprocess=meta["input"]["preprocess"],
                            mean=tuple(meta["input"]["mean"]), std=tuple(meta["input"]["std"]),
                            classes=[int(p) for p in preds])
    return gallery, scores


def label_gallery(run_dir: Path, member: int, index: ImageIndex, val_images: np.ndarray,
                  bag_probs: np.ndarray, thresholds: np.ndarray) -> str:
    """Per label, Grad-CAM of that label on validation images the bag calls positive."""
    model, meta = load_member(run_dir / "final" / f"member_{member}")
    out = run_dir / "report" / "gradcam"
    out.mkdir(parents=True, exist_ok=True)
    val = index.split("val")
    truth = index.targets("val")
    positive = bag_probs >= thresholds
    rows = []
    for j, name in enumerate(index.class_names):
        order = np.argsort(-bag_probs[:, j])
        chosen = [int(i) for i in order if positive[i, j]][:PER_CELL]
        picks = [(i, j, f"{name} p={bag_probs[i, j]:.2f} ({'true' if truth[i, j] else 'false'}"
                  " positive)") for i in chosen]
        figures = _gallery_images(out, val, val_images, model, meta, picks)
        if figures:
            rows.append(f"<tr><th>{html.escape(name)}</th><td>{''.join(figures)}</td></tr>")
    return (f"<p>Grad-CAM of member {member} ({html.escape(meta['model'])}) for each label, on "
            f"the validation images the bag predicts positive for it (at the label's threshold)"
            f"; labels with none are left out.</p><table class='grid'>{''.join(rows)}</table>")


def _metrics_table(summary: dict[str, Any], task: Task) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for _, name in task.columns)

    def cells(values: dict[str, float], tag: str = "td") -> str:
        return "".join(f"<{tag}>{values[k]:.4f}</{tag}>" for k, _ in task.columns)

    members = "".join(
        f"<tr><td>member {m['member']}: {html.escape(m.get('model', ''))} (trial "
        f"{html.escape(m['trial_id'])}, seed {m['seed']})"
        f"</td>{cells(m['val'])}<td>{html.escape(m['device'])}, "
        f"<code>{html.escape(short_node(m['node_id']))}</code></td></tr>"
        for m in summary["members"])
    test = (f"<tr><td>bag on the test split (its labels)</td>{cells(summary['bag']['test'])}"
            "<td></td></tr>" if "test" in summary["bag"] else "")
    failed = "".join(f"<p class='flag'>member {f['member']} (trial {html.escape(f['trial_id'])}) "
                     f"failed: {html.escape(f['error'])}</p>" for f in summary["failed"])
    submission = ("<p>test predictions: <code>submission/test_predictions.csv</code></p>"
                  if summary["submission"] else
                  "<p class='flag'>no test split in this dataset: no submission was written</p>")
    name = "greedy bag" if summary.get("select") == "greedy" else f"bag ({summary['method']})"
    return (f"<table><tr><th></th>{head}<th>trained on (device, Ray node)</th></tr>{members}"
            f"<tr><th>{html.escape(name)}</th>"
            f"{cells(summary['bag']['val'], 'th')}<th></th></tr>"
            f"<tr><td>spread (std)</td>{cells(summary['spread'])}<td></td></tr>{test}</table>"
            f"<p>validation split unless said otherwise</p>{failed}{submission}")


def _split_row(values: dict[str, Any], task: Task) -> dict[str, float]:
    """A table row of a result's task metrics per split ("val QWK", "test QWK", ...)."""
    return {f"{split} {name}": values[split][key] for split in ("val", "test") if split in values
            for key, name in task.columns}


def selection_section(summary: dict[str, Any], task: Task) -> str:
    """The greedy bag, the plain top-k bag and every member, with its architecture."""
    rows: dict[str, dict[str, Any]] = {
        label: _split_row(values, task)
        for label, values in (("greedy bag", summary["bag"]), ("top-k bag", summary["top_k_bag"]))}
    for m in summary["members"]:
        label = f"member {m['member']}: {m['model']} (trial {m['trial_id']})"
        rows[label] = {f"val {name}": m["val"][key] for key, name in task.columns}
        rows[label]["greedy weight"] = m["weight"]
    frame = pd.DataFrame(rows).T
    fair = (f"<p>{html.escape(describe_cross_fitted(summary['cross_fitted']))}</p>"
            if summary.get("cross_fitted") else "")  # records written before it lack it
    return ("<p>greedy selection with replacement on validation (Caruana et al., 2004) among "
            "the top-k trials and the best trial of each architecture; a member's weight is how "
            "often it was picked. Its validation score in the table is optimistic (it was chosen "
            "there); cross-fitted below, and on the test split where labelled, it is not.</p>"
            + table(frame) + fair)


def two_stage_section(two: dict[str, Any], task: Task) -> str:
    """Stage 1's own result and cost; stage 2 beside the single-stage baseline."""
    stage1 = two["stage1"]
    if "value" in stage1:
        head = (f"<p>stage 1: {html.escape(str(stage1['data']))} ({stage1.get('dataset')}), "
                f"{stage1['epochs']} epochs at lr {stage1['lr']:g}, trained once in "
                f"{stage1['minutes']:.1f} minutes and shared by every trial; its own validation "
                f"{stage1['metric']} {stage1['value']:.4f} (epoch {stage1['epoch']})</p>")
    else:
        head = f"<p>stage 1: {html.escape(str(stage1.get('source') or stage1))}</p>"
    if "error" in two["baseline"]:
        return head + f"<p>the baseline failed: {html.escape(two['baseline']['error'])}</p>"
    rows = {label: _split_row(values, task)
            for label, values in (("single-stage baseline (no stage 1)", two["baseline"]),
                                  ("stage 2: member 1 (same config, seed and sample)",
                                   two["stage2_member_1"]),
                                  ("stage 2: the bag", two["stage2_bag"]))}
    return head + table(pd.DataFrame(rows).T) + (
        "<p>The baseline is member 1's configuration (same seed, bootstrap sample and epochs) "
        "trained from its ImageNet weights alone, without stage 1: the difference is what stage "
        "1 brought, on this data, whichever way it falls.</p>")


def final_sections(run_dir: Path, summary: dict[str, Any], task: Task, index: ImageIndex,
                   val_images: np.ndarray, bag_probs: np.ndarray,
                   val_labels: np.ndarray) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    names = index.class_names
    member = summary["members"][0]["member"]
    sections = [("Final: the bag against its members", _metrics_table(summary, task))]
    if summary.get("two_stage"):
        sections.append(("Two-stage transfer", two_stage_section(summary["two_stage"], task)))
    if summary.get("select") == "greedy":
        sections.append(("Ensemble selection: greedy against top-k", selection_section(summary,
                                                                                       task)))
    if task.per_label:
        thresholds = np.array([summary["thresholds"][n] for n in names])
        per_label = pd.DataFrame(summary["per_label"]).set_index("label")
        sections += [
            ("Per-label table of the bag (validation)",
             "<p>AUROC and AP are left out (blank) for a label without a positive or without a "
             "negative in validation: " + html.escape(", ".join(
                 per_label.index[per_label["auroc"].isna()]) or "none") + ". Thresholds maximise"
             " each label's F1 on validation, so F1 there is optimistic.</p>" + table(per_label)),
            ("ROC curves of the most frequent labels (validation)",
             img(roc_figure(val_labels, bag_probs, names, out), "ROC curves")),
            ("Grad-CAM gallery per label",
             label_gallery(run_dir, member, index, val_images, bag_probs, thresholds))]
        return sections, None
    labels, preds = val_labels, bag_probs.argmax(axis=1)
    gallery, scores = gallery_and_localisation(run_dir, member, index, val_images, bag_probs)
    sections += [("Confusion matrix of the bag (validation)",
                  img(confusion_figure(labels, preds, names, out), "confusion matrix")),
                 ("Per-class table of the bag (validation)",
                  table(per_class_table(labels, preds, names))),
                 ("Grad-CAM gallery", gallery)]
    if scores and scores.get("images"):
        sections.append(("Lesion localisation (Grad-CAM against the lesion masks)", (
            f"<table><tr><th></th><th>Grad-CAM</th><th>uniform map</th></tr>"
            f"<tr><td>share of CAM energy inside the lesions</td>"
            f"<td>{scores['energy_in_mask']:.3f}</td><td>{scores['energy_uniform']:.3f}</td></tr>"
            f"<tr><td>pointing game hit rate</td><td>{scores['pointing_hit_rate']:.3f}</td>"
            f"<td>{scores['pointing_uniform']:.3f}</td></tr></table>"
            f"<p>{scores['images']} validation images with lesions</p>")))
    return sections, scores


def gain_section(gain: dict[str, Any]) -> str:
    """The report's first section: one line, then the table."""
    if "val" not in gain:
        return ("<p class='flag'>every training of the experiment's defaults failed: "
                + html.escape("; ".join(f["error"] for f in gain["defaults"]["failed"]))
                + "</p>")
    rows = {}
    for split in ("val", "test"):
        if split not in gain:
            continue
        s = gain[split]
        rows[f"{split}: defaults (mean ± std over seeds)"] = {
            "value": s["defaults"]["mean"], "± / gain": s["defaults"]["std"]}
        for key, label in (("members", "members' mean"),
                           ("best_member", f"best member ({s['best_member']['member']})"),
                           ("bag", "bag")):
            rows[f"{split}: {label}"] = {"value": s[key]["value"], "± / gain": s[key]["gain"],
                                         "low": s[key]["low"], "high": s[key]["high"]}
        if "bag_over_best_member" in s:
            r = s["bag_over_best_member"]
            rows[f"{split}: bag over its best member (paired)"] = {
                "± / gain": r["gain"], "low": r["low"], "high": r["high"]}
    defaults = ", ".join(f"{k}={v}" for k, v in gain["defaults"]["config"].items())
    return (f"<p><b>{html.escape(verdict(gain))}</b></p>"
            f"<p>{html.escape(describe_gain(gain, 'test' if 'test' in gain else 'val'))}</p>"
            + table(pd.DataFrame(rows).T)
            + f"<p>defaults: the experiment's own configuration ({html.escape(defaults)}), "
              f"trained with each member's seed, bootstrap sample and epochs. Intervals: "
              f"{int(100 * gain['level'])}% bootstrap over {gain['unit']}, every model scored "
              "on the same draw. The best member is the best on validation, and validation "
              "chose the configurations: the test split, where labelled, is the fair "
              "comparison.</p>")


def report_final(plan: FinalPlan, summary: dict[str, Any], data: Any, bag_val: np.ndarray,
                 *, echo: Any) -> None:
    """The report (with Grad-CAM's localisation on validation), final/metrics.json, W&B."""
    run_dir = plan.run_dir
    report, localisation = _report(run_dir, plan.experiment, summary, data.index,
                                   data.images["val"], bag_val, data.labels["val"])
    summary["localisation"] = localisation
    (run_dir / "final" / "metrics.json").write_text(json.dumps(summary, indent=1))
    if localisation and localisation.get("images"):
        echo(f"Grad-CAM localisation on {localisation['images']} val images with lesions: "
             f"energy in lesions {localisation['energy_in_mask']:.3f} (uniform "
             f"{localisation['energy_uniform']:.3f}), pointing game "
             f"{localisation['pointing_hit_rate']:.3f} (uniform {localisation['pointing_uniform']:.3f})")
    echo(f"report: {report}")
    if plan.spec.wandb:
        echo(log_final(run_dir, summary))


def _report(run_dir: Path, experiment: Any, summary: dict[str, Any], index: Any,
            val_images: np.ndarray, bag_val: np.ndarray,
            val_labels: np.ndarray) -> tuple[Path, dict[str, Any] | None]:
    import optuna

    from search.engine.driver import study_url
    from search.report.search import section_id, write_report

    sections, localisation = final_sections(run_dir, summary, experiment.task, index,
                                            val_images, bag_val, val_labels)
    if summary.get("ledger"):
        sections.append(("Cost", cost_section(summary["ledger"])))
    sections.append(("Disk", disk_section(run_dir)))
    study = optuna.load_study(study_name=run_dir.name, storage=study_url(run_dir))
    if (run_dir / "best" / "pareto.json").is_file():  # --objectives
        from search.report.search import pareto_section

        sections.insert(1, ("Pareto front", pareto_section(run_dir, study, summary)))
    first = ([("What the search bought over the experiment's defaults",
               gain_section(summary["gain"]))] if summary.get("gain") else [])
    path = write_report(run_dir, study=study, metric=experiment.metric, mode=experiment.mode,
                        final_sections=sections, first_sections=first)
    remote = kept_remotely(run_dir)
    where = remote.location if remote else str(run_dir.resolve())
    study.set_user_attr("report", f"{where}/report/index.html#{section_id('Best trials')}")
    return path, localisation


def run_sizes(run_dir: Path) -> dict[str, int]:
    """Bytes per part of the run folder: this folder's files, and tune/ where Ray Tune keeps it
    (the object store, for a run folder staged from a URI)."""
    sizes = RunStore(run_dir).sizes()
    remote = kept_remotely(run_dir)
    if remote:
        sizes["tune/"] = remote.sizes().get("tune/", 0)
    return sizes


def kept_remotely(run_dir: Path) -> RunStore | None:
    """The object-store run folder that `run_dir` is the local stage of, if any."""
    results = json.loads((run_dir / "config.json").read_text()).get("results", "")
    return RunStore.at(results, run_dir.parent.name, run_dir.name) if is_uri(results) else None


def cost_section(ledger: dict[str, Any]) -> str:
    """The run's ledger: GPU- and CPU-hours by part and by node type."""
    parts = {"search": ledger["search"], "stage 1 (part of the search)": ledger.get("stage1"),
             "final step": ledger["final"], "total": ledger["total"]}
    def hours(rows: dict[str, Any]) -> pd.DataFrame:
        return pd.DataFrame({name: {"GPU-hours": d["gpu_hours"], "CPU-hours": d["cpu_hours"]}
                             for name, d in rows.items() if d}).T

    frame, types = hours(parts), hours(ledger["node_types"])
    held = ledger["held"]
    return (f"<p>resources held ({held['cpus']:g} CPU and {held['gpus']:g} GPU per trial and "
            f"per model) times the time held: a trial's training time as Ray Tune counts it "
            f"across resumes (the time the run was stopped is not counted), a model's task "
            f"time; {ledger['search']['trials']} trials, {ledger['final']['models']} models"
            f"</p>{table(frame)}<p>by node type</p>{table(types)}")


def disk_section(run_dir: Path) -> str:
    sizes = run_sizes(run_dir)
    frame = pd.DataFrame({"MB": {k: v / 1e6 for k, v in sorted(sizes.items(),
                                                                 key=lambda kv: -kv[1])}})
    return (f"<p>the run folder holds {sum(sizes.values()) / 1e6:.1f} MB when this report is "
            f"written: an ended trial keeps no checkpoint (a failed one keeps its latest, for "
            f"--resume), a member one weights file</p>{table(frame, '{:.1f}')}"
            f"<p>{html.escape(str(run_dir))}</p>")
