"""Drawing the splits a dataset lacks: seeded, stratified by label, a patient's images together."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split


def draw_splits(labels: np.ndarray, groups: np.ndarray, *, val_fraction: float,
                test_fraction: float, seed: int) -> tuple[np.ndarray, list[str]]:
    """A split name ("train", "val", "test") per row, and warnings.

    Groups (patients) are split, not rows: a group's stratum is its highest label. Where a
    label has too few groups to stratify, the split is drawn unstratified and a warning says so.
    """
    frame = pd.DataFrame({"label": labels, "group": groups})
    per_group = frame.groupby("group", sort=True)["label"].max()
    names, strata = per_group.index.to_numpy(), per_group.to_numpy()
    warnings: list[str] = []
    assigned = pd.Series("train", index=names, dtype=object)
    rest, rest_strata = names, strata
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if fraction <= 0:
            continue
        share = fraction / (1.0 - (test_fraction if split == "val" else 0.0))
        taken = _take(rest, rest_strata, share, seed, warnings, split)
        assigned[taken] = split
        keep = ~np.isin(rest, taken)
        rest, rest_strata = rest[keep], rest_strata[keep]
    return assigned.loc[groups].to_numpy(dtype=object).astype(str), warnings


def _take(names: np.ndarray, strata: np.ndarray, share: float, seed: int,
          warnings: list[str], split: str) -> np.ndarray:
    if len(names) < 2:
        return names[:0]
    try:
        _, taken = train_test_split(names, test_size=share, random_state=seed, stratify=strata)
    except ValueError:  # a class with a single group cannot be stratified
        warnings.append(f"the {split} split is drawn unstratified: some class has too few "
                        "images (or patients) to spread over the splits")
        _, taken = train_test_split(names, test_size=share, random_state=seed)
    return np.asarray(taken)
