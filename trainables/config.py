"""The trial config: every knob of one training run, typed, validated, in one place.

A trial config is plain data (a dict in Ray Tune, JSON on disk, ``--set key=value`` on the
command line); `TrainConfig` is the checked form of it. An unknown key or a value of the wrong
type is a `ConfigError` that lists the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from trainables.errors import ConfigError

PREPROCESSING = ("none", "circle", "ben")
SCHEDULERS = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
TASKS = ("grading", "classes", "multilabel")
LOSSES = ("auto", "ce", "bce", "focal")
AUGMENT_OPS = ("flip", "rotate", "tilt", "scale", "color")  # tilt: a small rotation, +-15 deg


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Scientific, nuisance and fixed hyperparameters live side by side."""

    # data
    data: str = ""  # dataset root; `--demo` fills it with generated data
    dataset: str = "deepdrid"  # reader for `data` (trainables.datasets.readers())
    task: str = "grading"  # grading | classes | multilabel (see trainables.tasks)
    num_classes: int = 5  # classes or labels; set from the data by the CLIs (DR grades: 5)
    val_fraction: float = 0.15  # share held out for validation where the data has no val split
    test_fraction: float = 0.15  # share held out for test from a raw class-folder tree
    split_seed: int = 0  # seeds those splits (stratified; a patient's images stay together)
    image_size: int = 224  # side of the square network input, in pixels
    preprocess: str = "circle"  # none | circle (crop to the fundus) | ben (circle + Ben Graham's)
    cache_dir: str = ""  # "" = $MEDTUNE_CACHE or ~/.cache/medtune
    # model
    model: str = "resnet18"  # any timm model with a 4-D forward_features
    weights: str = "imagenet"  # imagenet (hub) | bundled | none | path to .pth/.pt/.safetensors
    unfreeze_depth: int | str = "all"  # last k backbone stages train; 0 = head only; "all"
    attention: bool = False  # multi-head self-attention over the last feature map
    heads: int = 4  # attention heads (must divide the feature channels)
    layer_norm: bool = True  # LayerNorm after attention
    residual: bool = True  # attention output added to its input
    dropout: float = 0.2  # before the classifier
    # optimisation
    lr: float = 3e-4  # peak learning rate of AdamW
    weight_decay: float = 1e-4
    batch_size: int = 32
    epochs: int = 10
    scheduler: str = "cosine"  # cosine | step (x0.1 at 2/3 of the run) | constant; 1 epoch warm-up
    warmup_epochs: float = 1.0  # linear warm-up length (0 = none)
    label_smoothing: float = 0.0  # cross-entropy only
    loss: str = "auto"  # auto (ce, or bce for multilabel) | ce | bce (pos_weight from train) | focal
    focal_gamma: float = 2.0  # focusing exponent of the focal loss
    class_weights: bool = False  # ce: weight classes by inverse frequency in train
    augment: str = "flip+rotate"  # none, or ops joined by '+': flip, rotate, tilt, scale, color
    seed: int = 0  # seeds weights of new layers, data order, augmentation and dropout
    bootstrap: int = -1  # >= 0: train on a bootstrap resample of the training set drawn with this seed
    # runtime (do not change the result on a given device)
    device: str = "auto"  # auto (the GPU Ray gave the trial, else CPU) | cpu | cuda
    amp: bool = True  # mixed precision, CUDA only
    channels_last: bool = True  # memory format, CUDA only
    max_train_batches: int = 0  # cap per epoch, 0 = all (smoke tests)
    max_eval_batches: int = 0  # cap per evaluation, 0 = all

    def __post_init__(self) -> None:
        _check_choice("preprocess", self.preprocess, PREPROCESSING)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("task", self.task, TASKS)
        _check_choice("loss", self.loss, LOSSES)
        if self.loss != "auto" and (self.task == "multilabel") != (self.loss in ("bce", "focal")):
            raise ConfigError(f"loss={self.loss!r} does not fit task={self.task!r}: use ce for "
                              "grading and classes, bce or focal for multilabel (or auto)")
        if not (0.0 < self.val_fraction < 1.0 and 0.0 <= self.test_fraction < 1.0
                and self.val_fraction + self.test_fraction < 1.0):
            raise ConfigError(f"val_fraction={self.val_fraction}, test_fraction="
                              f"{self.test_fraction}: each in [0, 1), val above 0, together "
                              "below 1")
        augment_ops(self.augment)
        if not (self.unfreeze_depth == "all" or (isinstance(self.unfreeze_depth, int)
                                                 and self.unfreeze_depth >= 0)):
            raise ConfigError(
                f"unfreeze_depth={self.unfreeze_depth!r}: use a whole number >= 0 or 'all'"
            )
        for name in ("lr", "batch_size", "epochs", "image_size", "num_classes", "heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be > 0")
        if self.bootstrap < -1:
            raise ConfigError(f"bootstrap={self.bootstrap}: use -1 (off) or a seed >= 0")
        for name in ("weight_decay", "warmup_epochs", "max_train_batches", "max_eval_batches",
                     "focal_gamma", "split_seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={self.label_smoothing!r} must be in [0, 1)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout!r} must be in [0, 1)")
        if self.image_size < 32:
            raise ConfigError(f"image_size={self.image_size} is too small: use 32 or more")

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from typed values (a Ray Tune config, JSON); unknown keys are an error.

        Values given as strings are parsed as on the command line, so a config written by
        hand or by another tool is checked the same way.
        """
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            raise ConfigError(_unknown_message(unknown[0]))
        hints = get_type_hints(cls)
        return cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["lr=1e-3", "attention=true"]`` into typed values; bad keys and values are errors."""
    hints = get_type_hints(TrainConfig)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: write key=value, e.g. --set lr=1e-3")
        if key not in hints:
            raise ConfigError(_unknown_message(key))
        out[key] = _coerce(key, raw.strip(), hints[key])
    return out


def augment_ops(policy: str) -> tuple[str, ...]:
    """The ops of an augmentation policy ('none' or ops joined by '+'), validated."""
    if policy == "none":
        return ()
    ops = tuple(op.strip() for op in policy.split("+"))
    bad = [op for op in ops if op not in AUGMENT_OPS]
    if bad or len(set(ops)) != len(ops) or {"rotate", "tilt"} <= set(ops):
        raise ConfigError(
            f"augment={policy!r}: use 'none' or ops joined by '+' from {', '.join(AUGMENT_OPS)}"
            " (e.g. 'flip+rotate+color'), each at most once, rotate or tilt"
        )
    return ops


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: choose one of {', '.join(choices)}")


def _unknown_message(key: str) -> str:
    close = difflib.get_close_matches(key, TrainConfig.keys(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown config key {key!r}{hint}; valid keys: {', '.join(TrainConfig.keys())}"


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the field's type; strings are parsed, other types must match."""
    if key == "unfreeze_depth":
        if value == "all" or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"unfreeze_depth={value!r}: use a whole number >= 0 or 'all'")
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise ValueError
        if hint is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return int(value) if isinstance(value, int | str) else _raise()
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value) if isinstance(value, int | float | str) else _raise()
        if hint is str:
            if isinstance(value, str):
                return value
            raise ValueError
    except ValueError:
        pass
    raise ConfigError(f"{key}={value!r}: expected {getattr(hint, '__name__', hint)}")


def _raise() -> Any:
    raise ValueError
