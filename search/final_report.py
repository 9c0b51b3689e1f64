"""The final step's part of the report: the bag's confusion matrix and per-class table, the
Grad-CAM gallery per grade (right and wrong predictions), and lesion localisation."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image

from search.report import confusion_figure, img, per_class_table, table
from trainables.datasets import ImageIndex
from trainables.explain import normalise

PER_CELL = 2  # images per grade and outcome in the gallery


def load_member(folder: Path) -> tuple[Any, dict[str, Any]]:
    """A member rebuilt from its metadata.json and model.safetensors (no hub access)."""
    from safetensors.torch import load_file

    from trainables.config import TrainConfig
    from trainables.models import build_model

    meta = json.loads((folder / "metadata.json").read_text())
    model = build_model(TrainConfig.from_dict({**meta["config"], "weights": "none"}))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), meta


def _normalise(images: np.ndarray, meta: dict[str, Any]) -> torch.Tensor:
    return normalise(images, tuple(meta["input"]["mean"]), tuple(meta["input"]["std"]))


def gallery_and_localisation(run_dir: Path, member: int, index: ImageIndex,
                             val_images: np.ndarray,
                             bag_probs: np.ndarray) -> tuple[str, dict[str, Any] | None]:
    """Grad-CAM of one member for right and wrong bag predictions per grade; localisation
    scores over every validation image with a lesion mask (the demo writes them)."""
    from trainables.explain import grad_cam, localise_split

    model, meta = load_member(run_dir / "final" / f"member_{member}")
    out = run_dir / "report" / "gradcam"
    out.mkdir(parents=True, exist_ok=True)
    val = index.split("val")
    labels, preds = val["label"].to_numpy(), bag_probs.argmax(axis=1)
    picked: list[tuple[int, str]] = []
    for grade in range(meta["num_classes"]):
        for outcome, chosen in (("right", labels == preds), ("wrong", labels != preds)):
            rows = np.flatnonzero((labels == grade) & chosen)[:PER_CELL]
            picked += [(int(i), outcome) for i in rows]
    cams = grad_cam(model, _normalise(val_images[[i for i, _ in picked]], meta),
                    [int(preds[i]) for i, _ in picked]) if picked else np.zeros((0, 1, 1))
    cells: dict[tuple[int, str], list[str]] = {}
    for (i, outcome), cam in zip(picked, cams, strict=True):
        overlay = show_cam_on_image(val_images[i].astype(np.float32) / 255, cam, use_rgb=True)
        name = f"val_{i}_grade{labels[i]}_pred{preds[i]}.png"
        Image.fromarray(overlay).save(out / name)
        cells.setdefault((int(labels[i]), outcome), []).append(
            f"<figure>{img('gradcam/' + name, name)}<figcaption>{html.escape(val['image_id'][i])}"
            f": true {labels[i]}, predicted {preds[i]}</figcaption></figure>")
    grid = "".join(
        f"<tr><th>grade {g}</th><td>{''.join(cells.get((g, 'right'), [])) or '-'}</td>"
        f"<td>{''.join(cells.get((g, 'wrong'), [])) or '-'}</td></tr>"
        for g in range(meta["num_classes"]))
    gallery = (f"<p>Grad-CAM of member {member} ({html.escape(meta['model'])}) for the bag's "
               f"predicted "
               f"grade, on the validation split.</p><table class='grid'><tr><th></th>"
               f"<th>right</th><th>wrong</th></tr>{grid}</table>")
    scores = localise_split(model, index, val_images, split="val", size=meta["input"]["size"],
                            preprocess=meta["input"]["preprocess"],
                            mean=tuple(meta["input"]["mean"]), std=tuple(meta["input"]["std"]),
                            classes=[int(p) for p in preds])
    return gallery, scores


def final_sections(run_dir: Path, summary: dict[str, Any], index: ImageIndex,
                   val_images: np.ndarray, bag_probs: np.ndarray) -> tuple[list[tuple[str, str]],
                                                                           dict[str, Any] | None]:
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    labels = index.split("val")["label"].to_numpy()
    preds = bag_probs.argmax(axis=1)
    names = index.class_names
    members = "".join(
        f"<tr><td>member {m['member']} (trial {html.escape(m['trial_id'])}, seed {m['seed']})"
        "</td>" + "".join(f"<td>{m['val'][k]:.4f}</td>" for k in ("kappa", "accuracy", "f1_macro"))
        + f"<td>{html.escape(m['device'])}, <code>{html.escape(m['node_id'])}</code></td></tr>"
        for m in summary["members"])
    b, s = summary["bag"]["val"], summary["spread"]
    failed = "".join(f"<p class='flag'>member {f['member']} (trial {html.escape(f['trial_id'])}) "
                     f"failed: {html.escape(f['error'])}</p>" for f in summary["failed"])
    submission = ("<p>test predictions: <code>submission/test_predictions.csv</code></p>"
                  if summary["submission"] else
                  "<p class='flag'>no test split in this dataset: no submission was written</p>")
    metrics = (f"<table><tr><th></th><th>QWK</th><th>accuracy</th><th>macro F1</th>"
               f"<th>trained on (device, Ray node)</th></tr>{members}"
               f"<tr><th>bag ({html.escape(summary['method'])})</th><th>{b['kappa']:.4f}</th>"
               f"<th>{b['accuracy']:.4f}</th><th>{b['f1_macro']:.4f}</th><th></th></tr>"
               f"<tr><td>spread (std)</td><td>{s['kappa']:.4f}</td><td>{s['accuracy']:.4f}</td>"
               f"<td>{s['f1_macro']:.4f}</td><td></td></tr></table><p>validation split</p>"
               f"{failed}{submission}")
    gallery, scores = gallery_and_localisation(run_dir, summary["members"][0]["member"], index,
                                               val_images, bag_probs)
    sections = [("Final: the bag against its members", metrics),
                ("Confusion matrix of the bag (validation)",
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
