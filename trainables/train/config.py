"""The trial config: every knob of one training run, typed, validated, in one place.

A trial config is plain data (a dict in Ray Tune, JSON on disk, ``--set key=value`` on the
command line); `TrainConfig` is the checked form of it. An unknown key or a value of the wrong
type is a `ConfigError` that lists the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from trainables.errors import ConfigError

PREPROCESSING = ("none", "circle", "ben")
SCHEDULERS = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
PREFETCH = ("auto", "on", "off")
AMP_DTYPES = ("auto", "bf16", "fp16")
LOSSES = ("auto", "ce", "bce", "focal")
AUGMENT_OPS = ("flip", "rotate", "tilt", "scale", "color")  # tilt: a small rotation, +-15 deg
PHASE_FIELDS = ("epochs", "lr", "scheduler", "warmup_epochs", "unfreeze_depth")
# a searched or --set value of one phase: phase_<name>_<field>, e.g. phase_b_lr
PHASE_KEY = re.compile(r"^phase_([a-z0-9]+)_(" + "|".join(PHASE_FIELDS) + r")$")


@dataclass(frozen=True)
class Phase:
    """One phase of a trial: its own epochs, lr, schedule, warm-up and unfreeze depth.
    Epochs count across phases: the phase runs epochs start+1 .. start+epochs."""

    name: str
    start: int
    epochs: int
    lr: float
    scheduler: str
    warmup_epochs: float
    unfreeze_depth: int | str

    @property
    def end(self) -> int:
        return self.start + self.epochs


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Scientific, nuisance and fixed hyperparameters live side by side."""

    # data
    data: str = ""  # dataset root; `--demo` fills it with generated data
    dataset: str = "deepdrid"  # reader for `data` (trainables.data.formats.readers())
    task: str = "grading"  # grading | classes | multilabel (see trainables.tasks)
    metric: str = ""  # the validation metric its experiment optimises ("": the task's usual)
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
    # two-stage transfer: start from a model fine-tuned first on a larger DR set (stage 1),
    # trained once per stage-1 data and config and shared (trainables.train.stage1), or from a file
    stage1_data: str = ""  # APTOS 2019 or Kaggle DR Resized root; "" = no stage 1
    stage1_dataset: str = "auto"  # its reader: auto (by its CSV) | aptos | kaggle_dr | ...
    stage1_epochs: int = 5  # stage 1's own epochs (all stages train, cosine)
    stage1_lr: float = 3e-4  # stage 1's own lr
    stage1_weights: str = ""  # a model.safetensors to start from instead (a member's, stage 1's)
    stage1_store: str = ""  # where stage-1 models are kept; "" = <cache>/stage1 (a search: run/stage1)
    # optimisation
    lr: float = 3e-4  # peak learning rate of AdamW
    weight_decay: float = 1e-4
    batch_size: int = 32
    epochs: int = 10
    scheduler: str = "cosine"  # cosine | step (x0.1 at 2/3 of the run) | constant; 1 epoch warm-up
    warmup_epochs: float = 1.0  # linear warm-up length (0 = none)
    # phases, trained one after another: a list of {name, epochs, lr, scheduler, warmup_epochs,
    # unfreeze_depth}; a value a phase leaves out is the one above; the last phase's epochs
    # may be left out (the rest of `epochs`). Each phase starts from the previous one's
    # best-epoch weights (by phase_metric) with a fresh optimizer. () = one phase.
    phases: tuple[dict[str, Any], ...] = ()
    phase_metric: str = ""  # picks a phase's best epoch (a *loss: lowest); "" = the task's metric
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
    amp_dtype: str = "auto"  # auto (bf16 where the GPU has it, else fp16) | bf16 | fp16 (+ GradScaler)
    channels_last: bool = True  # memory format, CUDA only
    threads: int = 0  # torch's intra-op threads; 0: the CPUs Ray gave the trial, else every core
    prefetch: str = "auto"  # a thread reads the next batch during compute: auto = with a GPU only
    max_train_batches: int = 0  # cap per epoch, 0 = all (smoke tests)
    max_eval_batches: int = 0  # cap per evaluation, 0 = all
    report_cost: bool = False  # each epoch also reports model/latency_ms and model/params

    def __post_init__(self) -> None:
        _check_choice("preprocess", self.preprocess, PREPROCESSING)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("prefetch", self.prefetch, PREFETCH)
        _check_choice("amp_dtype", self.amp_dtype, AMP_DTYPES)
        from trainables.tasks import REGISTRY, task_class

        _check_choice("task", self.task, tuple(REGISTRY))
        task = task_class(self.task)
        if self.metric:
            _check_choice("metric", self.metric, tuple(f"val/{k}" for k, _ in task.columns))
        _check_choice("loss", self.loss, LOSSES)
        if self.loss != "auto" and self.loss not in task.losses:
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
        if self.stage1_data and self.stage1_weights:
            raise ConfigError("stage1_data and stage1_weights: give one (train stage 1 on a "
                              "dataset, or start from a file)")
        for name in ("lr", "batch_size", "epochs", "image_size", "num_classes", "heads",
                     "stage1_epochs", "stage1_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be > 0")
        if self.bootstrap < -1:
            raise ConfigError(f"bootstrap={self.bootstrap}: use -1 (off) or a seed >= 0")
        for name in ("weight_decay", "warmup_epochs", "max_train_batches", "max_eval_batches",
                     "threads",
                     "focal_gamma", "split_seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={self.label_smoothing!r} must be in [0, 1)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout!r} must be in [0, 1)")
        if self.image_size < 32:
            raise ConfigError(f"image_size={self.image_size} is too small: use 32 or more")
        if self.phases:
            explicit = [p for p in self.phases if "epochs" in p]
            if len(explicit) == len(self.phases):  # every phase's length given: they set epochs
                object.__setattr__(self, "epochs", sum(int(p["epochs"]) for p in self.phases))
            self.phase_plan()  # checks the lengths

    def require_epochs(self, epochs: int, given_as: str) -> None:
        """An explicit epoch count (`given_as`: the flag) must agree with phases that each give
        their length (they set the trial's epochs, and would overrule it without a word)."""
        if self.epochs != epochs:
            lengths = ", ".join(f"{p['name']} {p['epochs']}" for p in self.phases)
            raise ConfigError(
                f"{given_as} {epochs} disagrees with the phases' {self.epochs} epochs ({lengths}): "
                "give one of them, or leave the last phase's epochs out (it takes the rest)")

    def phase_plan(self) -> list[Phase]:
        """The phases of this trial, resolved (one phase of the top-level values if none)."""
        if not self.phases:
            return [Phase("", 0, self.epochs, self.lr, self.scheduler, self.warmup_epochs,
                          self.unfreeze_depth)]
        given = sum(int(p.get("epochs", 0)) for p in self.phases)
        last = self.phases[-1]
        plan, start = [], 0
        for phase in self.phases:
            epochs = int(phase["epochs"]) if "epochs" in phase else self.epochs - given
            if epochs <= 0:
                names = ", ".join(str(p["name"]) for p in self.phases[:-1])
                raise ConfigError(
                    f"phase {last['name']!r} has no epochs left: phases {names} take {given} of "
                    f"epochs={self.epochs} (raise epochs, or give each phase's epochs)")
            plan.append(Phase(
                str(phase["name"]), start, epochs, float(phase.get("lr", self.lr)),
                str(phase.get("scheduler", self.scheduler)),
                float(phase.get("warmup_epochs", self.warmup_epochs)),
                phase.get("unfreeze_depth", self.unfreeze_depth)))
            start += epochs
        return plan

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from typed values (a Ray Tune config, JSON); unknown keys are an error.

        Values given as strings are parsed as on the command line, so a config written by
        hand or by another tool is checked the same way.
        """
        unknown = sorted(k for k in set(values) - set(cls.keys()) if not PHASE_KEY.match(k))
        if unknown:
            raise ConfigError(_unknown_message(unknown[0]))
        hints = get_type_hints(cls)
        typed = {k: _coerce(k, v, hints[k]) for k, v in values.items() if k in hints}
        flat = {k: v for k, v in values.items() if k not in hints}
        if flat:
            typed["phases"] = _set_phase_values(typed.get("phases", ()), flat)
        return cls(**typed)

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
        phase_key = PHASE_KEY.match(key)
        if phase_key:  # phase_<name>_<field>: checked against the phases when they are known
            out[key] = _coerce(phase_key.group(2), raw.strip(), hints[phase_key.group(2)])
            continue
        if key not in hints:
            raise ConfigError(_unknown_message(key))
        out[key] = _coerce(key, raw.strip(), hints[key])
    return out


def config_value(config: dict[str, Any], key: str) -> Any:
    """A key's value in a trial config dict; a phase's (`phase_b_lr`) from its phase where
    it is not a key of its own (then it sits in `phases`). None where the config lacks it."""
    if key in config:
        return config[key]
    match = PHASE_KEY.match(key)
    if match:
        for phase in config.get("phases") or ():
            if phase.get("name") == match.group(1):
                return phase.get(match.group(2))
    return None


def is_config_key(key: str) -> bool:
    """A TrainConfig field, or one phase's value (phase_<name>_<field>)."""
    return key in {f.name for f in dataclasses.fields(TrainConfig)} or bool(PHASE_KEY.match(key))


def _set_phase_values(phases: tuple[dict[str, Any], ...],
                      flat: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """`phases` with phase_<name>_<field> values written into the named phases."""
    out = [dict(p) for p in phases]
    by_name = {p["name"]: p for p in out}
    hints = get_type_hints(TrainConfig)
    for key, value in sorted(flat.items()):
        match = PHASE_KEY.match(key)
        assert match is not None
        name, field = match.groups()
        if name not in by_name:
            known = ", ".join(by_name) or "none: the config has no phases"
            raise ConfigError(f"{key}: no phase named {name!r} (phases: {known})")
        by_name[name][field] = _coerce(field, value, hints[field])
    return tuple(out)


def _coerce_phases(value: Any) -> tuple[dict[str, Any], ...]:
    """A list of phase dicts (or its JSON), each field checked; names default to a, b, c..."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as e:
            raise ConfigError(f"phases={value!r}: not JSON ({e.msg}); write e.g. "
                              '[{"epochs": 5, "unfreeze_depth": 0}, {"lr": 1e-4}]') from None
    if not isinstance(value, list | tuple) or not all(isinstance(p, dict) for p in value):
        raise ConfigError(f"phases={value!r}: expected a list of phases, each a dict of "
                          f"{', '.join(PHASE_FIELDS)}")
    hints = get_type_hints(TrainConfig)
    out = []
    for i, phase in enumerate(value):
        name = str(phase.get("name", "abcdefghijklmnopqrstuvwxyz"[i % 26]))
        if not re.fullmatch(r"[a-z0-9]+", name):
            raise ConfigError(f"phase name {name!r}: use lower-case letters and digits")
        unknown = sorted(set(phase) - {"name", *PHASE_FIELDS})
        if unknown:
            raise ConfigError(f"phase {name!r}: unknown key {unknown[0]!r}; a phase sets "
                              f"{', '.join(PHASE_FIELDS)}")
        if "epochs" not in phase and i < len(value) - 1:
            raise ConfigError(f"phase {name!r}: give its epochs (only the last phase may "
                              "leave them out, to take the rest)")
        checked = {k: _coerce(k, v, hints[k]) for k, v in phase.items() if k != "name"}
        TrainConfig(**{k: v for k, v in checked.items()})  # each value checked as a top-level one
        out.append({"name": name, **checked})
    if len({p["name"] for p in out}) != len(out):
        raise ConfigError("phases: two phases have the same name")
    return tuple(out)


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
    if key == "phases":
        return _coerce_phases(value)
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
