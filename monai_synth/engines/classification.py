"""Classifier workflows for the augmentation study (seed 000 Sec. 4.3 / Table 2, seed 001 Table 1).

One run = optional pretraining on synthetic images, then (fine-)tuning on a stratified fraction of the real
training set (plus optional synthetic increments), with validation-based model selection and a final test on the
held-out REAL test set. Training uses MONAI's :class:`~monai.engines.SupervisedTrainer` /
:class:`~monai.engines.SupervisedEvaluator` (Ignite); metrics come from :mod:`monai_synth.metrics.classification`;
MLflow tracking uses :class:`monai.handlers.MLFlowHandler` plus :mod:`monai_synth.handlers.mlflow_extras`.

Defaults are seed 000's hyperparameters (Sec. 4.3): SGD, lr 0.001, momentum 0.9, 20 epochs, step LR schedule with
step 7 and gamma 0.1, batch 32.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import set_determinism

from monai_synth.data.image_io import load_image_2d
from monai_synth.handlers import mlflow_extras as mx
from monai_synth.handlers.classification import EpochStatsHandler, HistoryRecorderHandler, KeepBestHandler
from monai_synth.metrics.classification import (
    METRIC_NAMES,
    classification_metrics,
    confusion_matrix,
    roc_auc,
    roc_curve_points,
)
from monai_synth.networks import build_classifier
from monai_synth.utils.io import atomic_path, atomic_torch_save, ensure_writable_dir

__all__ = [
    "SELECTION_METRICS",
    "ClassifierRunConfig",
    "RunResult",
    "class_weights",
    "stratified_counts",
    "stratified_sample",
    "stratified_fraction",
    "classifier_transforms",
    "data_fingerprint",
    "predict_probabilities",
    "plot_confusion_matrix",
    "plot_roc_curve",
    "plot_training_curves",
    "train_classifier",
]

logger = logging.getLogger(__name__)

SELECTION_METRICS = ("accuracy", "auc", "f1_macro", "f1_pos", "recall_macro", "precision_macro")
_HASH_EXCLUDE = ("name", "tags", "num_workers")


@dataclass(frozen=True)
class ClassifierRunConfig:
    """Options of one classifier run. Defaults: seed 000, Sec. 4.3.

    Args:
        network: a name of :data:`monai_synth.networks.CLASSIFIER_NAMES` (default MONAI ResNet-18).
        in_channels: image channels.
        num_classes: classes (2: 0 = normal, 1 = pneumonia for PneumoniaMNIST).
        pretrained_path: optional LOCAL state-dict file to start from (never downloaded).
        geometric_aug: seed 000 "Geo aug": random horizontal flip + affine (30 degrees, 0.1 x 0.1 translation).
        flip_prob: probability of the horizontal flip.
        rotate_degrees: maximum absolute rotation of the affine.
        translate_fraction: maximum absolute translation as a fraction of the image size, per axis.
        weighted_loss: seed 000 "Weighted loss": cross entropy with w_c = N / (K * N_c) (see :func:`class_weights`).
        synthetic_pretrain: seed 000 "Synthetic PT": train on the synthetic set first, then fine-tune.
        real_fraction: seed 000 "Real data FT%" / 100, in [0, 1]; 0 = synthetic data only (no real fine-tuning).
        synthetic_added: seed 001 increments: number of synthetic images added to the real training set
            (stratified by the synthetic labels), e.g. 2500, 5000, 7500, 10000.
        epochs: epochs of the (fine-)tuning stage.
        pretrain_epochs: epochs of the synthetic pretraining stage (None = ``epochs``).
        batch_size: mini-batch size.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        lr_step_size: StepLR step (epochs).
        lr_gamma: StepLR factor.
        selection_metric: validation metric used for model selection (one of ``SELECTION_METRICS``, higher is
            better); the best epoch's weights are tested.
        epoch_length: iterations per epoch (None = a full pass); for quick checks and timing.
        seed: seeds the fraction sampler, weight init, shuffling and augmentation.
        num_workers: DataLoader workers (not part of the run identity).
        synthetic_datalist: provenance only: path of the synthetic datalist.
        synthetic_run_id: provenance only: MLflow run id of the generator that made the synthetic set.
        synthetic_checkpoint: provenance only: the generator checkpoint.
        name: display name of the run (not part of the run identity).
        tags: extra MLflow tags (not part of the run identity), e.g. ``{"table2_row": "7"}``.
    """

    network: str = "resnet18"
    in_channels: int = 1
    num_classes: int = 2
    pretrained_path: str | None = None
    geometric_aug: bool = False
    flip_prob: float = 0.5
    rotate_degrees: float = 30.0
    translate_fraction: float = 0.1
    weighted_loss: bool = False
    synthetic_pretrain: bool = False
    real_fraction: float = 1.0
    synthetic_added: int = 0
    epochs: int = 20
    pretrain_epochs: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_step_size: int = 7
    lr_gamma: float = 0.1
    selection_metric: str = "accuracy"
    epoch_length: int | None = None
    seed: int = 0
    num_workers: int = 0
    synthetic_datalist: str | None = None
    synthetic_run_id: str | None = None
    synthetic_checkpoint: str | None = None
    name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from monai_synth.networks import CLASSIFIER_NAMES

        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"ClassifierRunConfig.{name} must be {rule}, got {getattr(self, name)!r}.")

        if self.network not in CLASSIFIER_NAMES:
            raise bad("network", f"one of {list(CLASSIFIER_NAMES)}")
        for name in ("in_channels", "epochs", "batch_size", "lr_step_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise bad("num_classes", "an integer >= 2")
        if self.pretrain_epochs is not None and (not isinstance(self.pretrain_epochs, int) or self.pretrain_epochs < 1):
            raise bad("pretrain_epochs", "None or an integer >= 1")
        if self.epoch_length is not None and (not isinstance(self.epoch_length, int) or self.epoch_length < 1):
            raise bad("epoch_length", "None or an integer >= 1")
        for name in ("real_fraction", "flip_prob", "momentum", "translate_fraction"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise bad(name, "a number in [0, 1]")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0 or not math.isfinite(self.lr):
            raise bad("lr", "a finite number > 0")
        for name in ("weight_decay", "rotate_degrees"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) < 0:
                raise bad(name, "a number >= 0")
        if not isinstance(self.lr_gamma, (int, float)) or not 0.0 < self.lr_gamma <= 1.0:
            raise bad("lr_gamma", "a number in (0, 1]")
        if not isinstance(self.synthetic_added, int) or self.synthetic_added < 0:
            raise bad("synthetic_added", "an integer >= 0")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "an integer >= 0")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise bad("num_workers", "an integer >= 0")
        if self.selection_metric not in SELECTION_METRICS:
            raise bad("selection_metric", f"one of {list(SELECTION_METRICS)}")
        if self.real_fraction == 0 and not self.synthetic_pretrain and self.synthetic_added == 0:
            raise ValueError(
                "ClassifierRunConfig: real_fraction=0 leaves no training data; set synthetic_pretrain=True "
                "(synthetic-only training) or synthetic_added > 0."
            )
        object.__setattr__(self, "tags", {str(k): str(v) for k, v in dict(self.tags).items()})

    @property
    def uses_synthetic(self) -> bool:
        """Whether the run needs synthetic data."""
        return self.synthetic_pretrain or self.synthetic_added > 0

    def to_dict(self) -> dict[str, Any]:
        """All options as a plain dict."""
        d = dataclasses.asdict(self)
        d["tags"] = dict(self.tags)
        return d

    def identity(self) -> dict[str, Any]:
        """Options that define the run's result (everything except name, tags, num_workers)."""
        return {k: v for k, v in self.to_dict().items() if k not in _HASH_EXCLUDE}

    def config_hash(self) -> str:
        """Deterministic SHA-256 (hex, 16 chars) of :meth:`identity` as canonical JSON."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> ClassifierRunConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


@dataclass
class RunResult:
    """Outcome of one classifier run.

    Attributes:
        config: the run's options.
        config_hash: :meth:`ClassifierRunConfig.config_hash` (or the study's run key).
        test_metrics: :func:`~monai_synth.metrics.classification.classification_metrics` on the real test set.
        best_val_metric: best validation value of ``config.selection_metric`` in the last stage.
        best_epoch: epoch of that value (1-based, within the last stage).
        history: per-epoch lists: ``train_loss``, ``lr``, ``val_<metric>`` and ``stage``.
        confusion_matrix: (K, K) on the test set, rows = truth.
        data_sizes: sizes of the real/synthetic train, val and test sets actually used.
        run_id: MLflow run id (None without tracking).
        model_path: local file of the best state dict.
        wall_time_s: seconds of training + testing.
        skipped: True when a study found the run already FINISHED and did not retrain it.
    """

    config: ClassifierRunConfig
    config_hash: str
    test_metrics: dict[str, float]
    best_val_metric: float = float("nan")
    best_epoch: int = -1
    history: dict[str, list] = field(default_factory=dict)
    confusion_matrix: np.ndarray | None = None
    data_sizes: dict[str, int] = field(default_factory=dict)
    run_id: str | None = None
    model_path: str | None = None
    wall_time_s: float = float("nan")
    skipped: bool = False


# ----------------------------------------------------------------------------------------------- data helpers
def class_weights(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency ("balanced") class weights ``w_c = N / (K * N_c)``.

    Seed 000 uses "a weighted cross entropy (with weights given by label proportions in the dataset)"; we read
    this as the standard inverse-proportion weighting, so every class contributes equally to the expected loss
    (sum_c N_c w_c = N, the weights are 1 for a balanced set). Computed on the training set of each stage.

    Raises:
        ValueError: when a class has no sample (its weight would be infinite).
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    counts = np.bincount(y, minlength=num_classes)[:num_classes]
    if y.size == 0 or np.any(counts == 0):
        raise ValueError(
            f"class_weights: every class 0..{num_classes - 1} needs at least one training sample, got counts "
            f"{counts.tolist()}; disable `weighted_loss` or use more data."
        )
    return (y.size / (num_classes * counts)).astype(np.float64)


def stratified_counts(labels: Sequence[int] | np.ndarray, n: int) -> dict[int, int]:
    """Per-class sample counts for a stratified draw of ``n`` items, proportional to the class counts.

    Largest-remainder rounding: ``floor(n * N_c / N)`` per class, the remaining items go to the classes with the
    largest fractional parts (ties: lower class first), so the counts sum exactly to ``n``.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not 0 <= n <= y.size:
        raise ValueError(f"`n` must be in [0, {y.size}] (the number of items), got {n}.")
    classes, counts = np.unique(y, return_counts=True)
    if n == 0 or y.size == 0:
        return {int(c): 0 for c in classes}
    quota = n * counts / y.size
    base = np.floor(quota).astype(int)
    rest = n - int(base.sum())
    order = sorted(range(len(classes)), key=lambda i: (-(quota[i] - base[i]), i))
    for i in order[:rest]:
        base[i] += 1
    return {int(c): int(k) for c, k in zip(classes, base)}


def stratified_sample(labels: Sequence[int] | np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded stratified random draw of ``n`` items (class proportions kept, see
    :func:`stratified_counts`), returned in ascending order. Same seed -> same indices.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    rng = np.random.default_rng(seed)
    picked = []
    for c, k in stratified_counts(y, n).items():
        idx = np.flatnonzero(y == c)
        picked.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def stratified_fraction(labels: Sequence[int] | np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a seeded stratified ``fraction`` of the items (``round(fraction * N)`` in all).

    Seed 000 "Real data FT%": 10 % of PneumoniaMNIST train (1214 normal / 3494 pneumonia) gives 471 images,
    121 normal and 350 pneumonia.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"`fraction` must be in [0, 1], got {fraction}.")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    return stratified_sample(y, int(round(fraction * y.size)), seed)


def _check_items(data: Sequence[Mapping[str, Any]], name: str, num_classes: int) -> list[dict[str, Any]]:
    if data is None or len(data) == 0:
        raise ValueError(f"`{name}` is empty; give a list of {{'image': array or path, 'label': int}} items.")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, Mapping) or "image" not in item or "label" not in item:
            raise ValueError(f"`{name}[{i}]` must be a dict with keys 'image' and 'label', got {item!r:.80}.")
        if isinstance(item["image"], (str, os.PathLike)) and not os.path.isfile(item["image"]):
            raise FileNotFoundError(f"`{name}[{i}]['image']`: file {str(item['image'])!r} does not exist.")
        label = int(np.asarray(item["label"]).reshape(-1)[0])
        if not 0 <= label < num_classes:
            raise ValueError(f"`{name}[{i}]['label']` must be in [0, {num_classes - 1}], got {label}.")
        out.append({"image": item["image"], "label": label})
    return out


def _labels_of(items: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.asarray([it["label"] for it in items], dtype=np.int64)


def data_fingerprint(data: Sequence[Mapping[str, Any]] | None) -> str:
    """Short SHA-256 of a datalist (labels plus image bytes or paths), used to tell studies on different data apart."""
    h = hashlib.sha256()
    for item in data or []:
        h.update(str(int(np.asarray(item["label"]).reshape(-1)[0])).encode())
        img = item["image"]
        if isinstance(img, (str, os.PathLike)):
            h.update(str(img).encode())
        else:
            arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def _load_image(img: Any) -> torch.Tensor:
    """Array / tensor / file path -> float32 tensor (C, *spatial); integer images are scaled by their dtype max.

    Files other than ``.npy`` are read by :func:`monai_synth.data.load_image_2d` (2D, rows first, integer images
    scaled by their stored type's maximum).
    """
    if isinstance(img, (str, os.PathLike)):
        path = str(img)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image file {path!r} does not exist.")
        if path.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        else:
            arr = load_image_2d(path, rescale="dtype").numpy()
    else:
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    elif np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        what = f"Image file {str(img)!r}" if isinstance(img, (str, os.PathLike)) else "An image array"
        raise ValueError(
            f"{what} holds {int(np.isnan(arr).sum())} NaN and {int(np.isinf(arr).sum())} Inf values; replace them "
            "(e.g. np.nan_to_num) before training."
        )
    return torch.as_tensor(np.asarray(arr, dtype=np.float32))


def _ensure_channel(x: torch.Tensor) -> torch.Tensor:
    """Add a channel axis to a channel-less (H, W) image."""
    return x[None] if x.ndim == 2 else x


def _spatial_size(items: Sequence[Mapping[str, Any]]) -> tuple[int, ...]:
    """Spatial shape of the first item: images are channel-first (C, *spatial); a 2-D array is one (H, W) channel."""
    x = _load_image(items[0]["image"])
    return tuple(x.shape) if x.ndim == 2 else tuple(x.shape[1:])


def classifier_transforms(
    config: ClassifierRunConfig, spatial_size: Sequence[int], train: bool
) -> Any:  # monai.transforms.Compose
    """Dictionary transforms: load/convert ``image``, add a channel axis to channel-less arrays, and for training
    with ``geometric_aug`` a random horizontal flip and a random affine (seed 000 "Geo aug").

    ``RandAffined`` takes translations in pixels: ``translate_fraction * size`` per spatial axis (as torchvision's
    ``RandomAffine(degrees=30, translate=(0.1, 0.1))``, which seed 000 appears to use).
    """
    from monai.transforms import Compose, EnsureTyped, Lambdad, RandAffined, RandFlipd

    nsp = len(spatial_size)
    xs: list = [Lambdad("image", _load_image), Lambdad("image", _ensure_channel)]
    if train and config.geometric_aug:
        angle = math.radians(config.rotate_degrees)
        xs += [
            RandFlipd("image", prob=config.flip_prob, spatial_axis=nsp - 1),  # last axis = width = horizontal
            RandAffined(
                "image",
                prob=1.0,
                rotate_range=(angle,) if nsp == 2 else (angle,) * 3,
                translate_range=tuple(config.translate_fraction * s for s in spatial_size),
                padding_mode="zeros",
                mode="bilinear",
            ),
        ]
    xs.append(EnsureTyped("image", dtype=torch.float32, track_meta=False))
    return Compose(xs).set_random_state(seed=config.seed)


def _loader(items, config: ClassifierRunConfig, spatial_size, train: bool, seed_offset: int = 0):
    from monai.data import DataLoader, Dataset

    ds = Dataset(items, transform=classifier_transforms(config, spatial_size, train))
    gen = torch.Generator().manual_seed(config.seed + seed_offset)
    return DataLoader(
        ds, batch_size=config.batch_size, shuffle=train, num_workers=config.num_workers, generator=gen, drop_last=False
    )


@torch.no_grad()
def predict_probabilities(
    network: torch.nn.Module, data: Sequence[Mapping[str, Any]], config: ClassifierRunConfig, device: str | torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, K) and labels (N,) of ``data`` (no augmentation)."""
    items = _check_items(data, "data", config.num_classes)
    loader = _loader(items, config, _spatial_size(items), train=False)
    network.eval()
    probs, labels = [], []
    for batch in loader:
        logits = network(batch["image"].to(device))
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(torch.as_tensor(batch["label"]).reshape(-1))
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


# ----------------------------------------------------------------------------------------------- figures
def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str] | None = None, title: str = "") -> Any:
    """Confusion-matrix figure (counts and row-normalised %), rows = truth (matplotlib ``Figure``, no pyplot)."""
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    k = cm.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    fig = Figure(figsize=(3.2 + 0.4 * k, 3.0 + 0.4 * k))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(cm, cmap="Blues")
    rows = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    for i in range(k):
        for j in range(k):
            color = "white" if cm[i, j] > cm.max() / 2 else "black"
            ax.text(j, i, f"{cm[i, j]}\n{100 * cm[i, j] / rows[i, 0]:.1f}%", ha="center", va="center", color=color)
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "test confusion matrix", fontsize=9)
    fig.tight_layout()
    return fig


def plot_roc_curve(
    labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str] | None = None, title: str = ""
) -> Any:
    """ROC curve of test predictions (matplotlib ``Figure``): binary, class 1 as positive; K > 2 classes, one
    one-vs-rest curve per class (classes absent from ``labels`` are skipped). The legend gives each AUC."""
    from matplotlib.figure import Figure

    y, p = np.asarray(labels).reshape(-1).astype(np.int64), np.asarray(probs, dtype=np.float64)
    k = p.shape[1]
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="chance")
    for c in [1] if k == 2 else range(k):
        if (y == c).all() or not (y == c).any():
            continue
        fpr, tpr = roc_curve_points(y == c, p[:, c])
        auc = roc_auc((y == c).astype(np.int64), p[:, c])
        label = f"AUC {auc:.3f}" if k == 2 else f"{names[c]} vs rest: AUC {auc:.3f}"
        ax.plot(fpr, tpr, lw=1.8, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "test ROC", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_training_curves(history: Mapping[str, Sequence[float]], title: str = "") -> Any:
    """Train loss and validation metrics per epoch (matplotlib ``Figure``), epochs counted across stages."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    loss = list(history.get("train_loss", []))
    epochs = np.arange(1, len(loss) + 1)
    ax1.plot(epochs, loss, marker="o", ms=3, label="train loss")
    stages = list(history.get("stage", []))
    for e in range(1, len(stages)):
        if stages[e] != stages[e - 1]:
            ax1.axvline(e + 0.5, color="gray", ls="--")
            ax2.axvline(e + 0.5, color="gray", ls="--")
    ax1.set_xlabel("epoch")
    ax1.set_title("training loss", fontsize=9)
    for key in ("val_accuracy", "val_auc", "val_f1_macro"):
        vals = list(history.get(key, []))
        if vals:
            ax2.plot(np.arange(1, len(vals) + 1), vals, marker="o", ms=3, label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1)
    ax2.set_title("validation (real)", fontsize=9)
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _metric_fn(key: str):
    def fn(y_pred: torch.Tensor, y: torch.Tensor) -> float:
        return classification_metrics(y.reshape(-1).cpu().numpy(), y_pred.cpu().numpy())[key]

    return fn


def _softmax_output(out: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.softmax(out["pred"].float(), dim=1).detach(), out["label"].reshape(-1)


def _train_stage(
    network: torch.nn.Module,
    train_items: list[dict],
    val_items: list[dict],
    config: ClassifierRunConfig,
    epochs: int,
    spatial_size: tuple[int, ...],
    device: torch.device,
    stage: str,
    epoch_offset: int,
    history: dict[str, list],
    mlflow_handlers: list | None,
) -> tuple[float, int]:
    """One training stage with per-epoch validation; leaves the best validation weights in ``network``."""
    from ignite.metrics import EpochMetric
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.handlers import LrScheduleHandler, ValidationHandler

    weight = None
    if config.weighted_loss:
        weight = torch.as_tensor(class_weights(_labels_of(train_items), config.num_classes), dtype=torch.float32)
        logger.info("[%s] class weights w_c = N / (K N_c) = %s", stage, weight.tolist())
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None)
    optimizer = torch.optim.SGD(
        network.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_size, gamma=config.lr_gamma)

    metric_keys = [k for k in METRIC_NAMES if k not in ("precision_pos", "recall_pos")]  # logged every epoch
    sel = config.selection_metric
    others = [k for k in metric_keys if k != sel]

    def em(key: str):
        return EpochMetric(_metric_fn(key), output_transform=_softmax_output, check_compute_fn=False)

    keep_best = KeepBestHandler(network)
    val_handlers: list = [keep_best]
    val_log = HistoryRecorderHandler(history, prefix="", stage=stage)
    val_handlers.append(val_log)
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=_loader(val_items, config, spatial_size, train=False),
        network=network,
        key_val_metric={f"val_{sel}": em(sel)},
        additional_metrics={f"val_{k}": em(k) for k in others},
        val_handlers=val_handlers + (mlflow_handlers[1:] if mlflow_handlers else []),
        decollate=False,
    )
    stats = EpochStatsHandler(optimizer)
    train_log = HistoryRecorderHandler(history, prefix="", stage=None)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=epochs,
        epoch_length=config.epoch_length if config.epoch_length else None,
        train_data_loader=_loader(train_items, config, spatial_size, train=True, seed_offset=epoch_offset),
        network=network,
        optimizer=optimizer,
        loss_function=loss_fn,
        train_handlers=[
            stats,
            train_log,
            LrScheduleHandler(scheduler, print_lr=False),
            ValidationHandler(validator=evaluator, interval=1, epoch_level=True),
        ]
        + (mlflow_handlers[:1] if mlflow_handlers else []),
        decollate=False,
    )
    trainer.run()
    if keep_best.state is not None:
        network.load_state_dict(keep_best.state)
    return float(evaluator.state.best_metric), int(evaluator.state.best_metric_epoch)


def _plan_stages(
    config: ClassifierRunConfig,
    train_data: Sequence[Mapping[str, Any]] | None,
    val_data: Sequence[Mapping[str, Any]],
    test_data: Sequence[Mapping[str, Any]],
    synthetic_data: Sequence[Mapping[str, Any]] | None,
) -> tuple[list[tuple[str, list[dict], int]], list[dict], list[dict], dict[str, int]]:
    """Validate the data of a run and plan its stages ``(name, items, epochs)``; returns stages, val, test, sizes."""
    k = config.num_classes
    real = _check_items(train_data, "train_data", k) if config.real_fraction > 0 else list(train_data or [])
    val_items = _check_items(val_data, "val_data", k)
    test_items = _check_items(test_data, "test_data", k)
    synth: list[dict] = []
    if config.uses_synthetic:
        synth = _check_items(synthetic_data, "synthetic_data", k)
        if config.synthetic_added > len(synth):
            raise ValueError(
                f"ClassifierRunConfig.synthetic_added={config.synthetic_added} exceeds the {len(synth)} "
                "synthetic items."
            )
    real_idx = stratified_fraction(_labels_of(real), config.real_fraction, config.seed) if real else np.zeros(0, int)
    ft_items = [real[i] for i in real_idx]
    added_idx = (
        stratified_sample(_labels_of(synth), config.synthetic_added, config.seed + 1) if config.synthetic_added else []
    )
    ft_items += [synth[i] for i in added_idx]
    stages: list[tuple[str, list[dict], int]] = []
    if config.synthetic_pretrain:
        stages.append(("pretrain", synth, config.pretrain_epochs or config.epochs))
    if ft_items:
        stages.append(("finetune" if config.synthetic_pretrain else "train", ft_items, config.epochs))
    sizes = {
        "n_train_real": len(real_idx),
        "n_train_real_available": len(real),
        "n_synthetic_pretrain": len(synth) if config.synthetic_pretrain else 0,
        "n_synthetic_added": len(added_idx),
        "n_val": len(val_items),
        "n_test": len(test_items),
    }
    return stages, val_items, test_items, sizes


def _open_run(
    tracking_uri: str | None,
    output_dir: str | os.PathLike,
    experiment_name: str,
    on_unreachable: str,
    config: ClassifierRunConfig,
    chash: str,
    run_tags: Mapping[str, str] | None,
    parent_run_id: str | None,
) -> tuple[Any, str | None]:
    """Check the tracking URI and create the run; ``(None, None)`` when tracking is unavailable and allowed."""
    client = run_id = None
    uri = mx.resolve_tracking_uri(tracking_uri, output_dir)
    try:
        mx.check_tracking_uri(uri)
        client = mx.make_client(uri)
        exp_id = mx.get_or_create_experiment(client, experiment_name)
    except Exception as e:
        if on_unreachable == "raise":
            if isinstance(e, mx.TrackingUnavailableError):
                raise
            raise mx.TrackingUnavailableError(
                f"MLflow tracking URI {uri!r} failed ({type(e).__name__}: {e}). Pass on_unreachable='warn' to "
                "train without tracking."
            ) from e
        logger.warning("MLflow tracking at %r unavailable (%s); training WITHOUT tracking.", uri, e)
        client = None
    if client is not None:
        tags = {"monai_synth.config_hash": chash, **config.tags, **(run_tags or {})}
        run_id = mx.create_run(
            client, exp_id, run_name=config.name or chash, tags=tags, parent_run_id=parent_run_id
        )
    return client, run_id


def _log_test_results(
    client: Any, run_id: str, metrics: Mapping[str, float], cm: np.ndarray, figures: Mapping[str, Any],
    results: Mapping[str, Any], model_path: str | os.PathLike | None,
) -> None:
    """Test metrics (and the confusion-matrix cells), figures, ``results.json`` and (when given) the weights."""
    mlflow_entities = __import__("mlflow.entities", fromlist=["Metric"])
    k = cm.shape[0]
    ts = int(time.time() * 1000)
    test_metrics = [mlflow_entities.Metric(f"test_{m}", float(v), ts, 0) for m, v in metrics.items()]
    test_metrics += [mlflow_entities.Metric(f"test_cm_{i}{j}", float(cm[i, j]), ts, 0) for i in range(k)
                     for j in range(k)]  # fmt: skip
    client.log_batch(run_id, metrics=test_metrics)
    for name, fig in figures.items():
        mx.log_figure(client, run_id, fig, f"figures/{name}.png")
    mx.log_dict(client, run_id, results, "results.json")
    if model_path is not None:
        client.log_artifact(run_id, str(model_path), "model")


def _run_stages(
    network: torch.nn.Module,
    stages: Sequence[tuple[str, list[dict], int]],
    val_items: list[dict],
    config: ClassifierRunConfig,
    spatial_size: tuple[int, ...],
    device: torch.device,
    client: Any,
    run_id: str | None,
    experiment_name: str,
    chash: str,
) -> tuple[dict[str, list], float, int]:
    """Train the stages in order on one network; returns the history and the last stage's best value and epoch."""
    history: dict[str, list] = {}
    best_val, best_epoch, offset = float("nan"), -1, 0
    for stage, items, epochs in stages:
        handlers = _mlflow_handlers(client, run_id, experiment_name, offset) if client is not None else None
        logger.info("[%s] %s: %d items, %d epochs", chash, stage, len(items), epochs)
        best_val, best_epoch = _train_stage(
            network, items, val_items, config, epochs, spatial_size, device, stage, offset, history, handlers
        )
        if client is not None:
            client.log_metric(run_id, f"{stage}_best_val_{config.selection_metric}", best_val)
            client.log_metric(run_id, f"{stage}_best_epoch", best_epoch)
        offset += epochs
    return history, best_val, best_epoch


def _test(
    network: torch.nn.Module,
    test_items: list[dict],
    config: ClassifierRunConfig,
    device: torch.device,
    history: Mapping[str, Sequence[float]],
    title: str,
    out_dir: Path,
) -> tuple[dict[str, float], np.ndarray, dict[str, Any]]:
    """Test metrics, confusion matrix and the figures ``confusion_matrix``, ``roc`` and ``training_curves`` (also saved
    as PNG in ``out_dir``)."""
    probs, labels = predict_probabilities(network, test_items, config, device)
    metrics = classification_metrics(labels, probs, num_classes=config.num_classes)
    cm = confusion_matrix(labels, probs.argmax(1), config.num_classes)
    figures = {
        "confusion_matrix": plot_confusion_matrix(cm, title=title),
        "roc": plot_roc_curve(labels, probs, title=title),
        "training_curves": plot_training_curves(history, title),
    }
    for name, fig in figures.items():
        fig.savefig(out_dir / f"{name}.png", dpi=100)
    return metrics, cm, figures


def train_classifier(
    config: ClassifierRunConfig,
    train_data: Sequence[Mapping[str, Any]] | None,
    val_data: Sequence[Mapping[str, Any]],
    test_data: Sequence[Mapping[str, Any]],
    synthetic_data: Sequence[Mapping[str, Any]] | None = None,
    output_dir: str | os.PathLike = "./classifier_runs",
    tracking_uri: str | None = None,
    experiment_name: str = "monai_synth_classifier",
    track: bool = True,
    on_unreachable: str = "raise",
    parent_run_id: str | None = None,
    run_tags: Mapping[str, str] | None = None,
    extra_params: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    log_weights: bool = False,
) -> RunResult:
    """Train, select on validation and test one classifier (seed 000 Sec. 4.3), logging everything to MLflow.

    Stages: (1) if ``config.synthetic_pretrain``: train on ``synthetic_data`` for ``pretrain_epochs``;
    (2) if ``real_fraction > 0`` or ``synthetic_added > 0``: (fine-)tune on a stratified seeded
    ``real_fraction`` of ``train_data`` plus ``synthetic_added`` stratified synthetic items. Each stage validates
    every epoch on the real ``val_data`` and keeps the weights of its best ``selection_metric`` epoch; the final
    weights are tested on the real ``test_data``.

    MLflow (when ``track``): options and data sizes as params, per-epoch ``train_loss``, ``lr``, ``val_*``, final
    ``test_*``, the figures, ``results.json`` and, with ``log_weights``, ``model/best_state_dict.pt``
    (docs/classification.md; weights trained on patient images can leak them, so they stay local and owner-only
    unless asked). On an
    exception the run is marked FAILED (KILLED for KeyboardInterrupt) and the exception is re-raised.

    Args:
        config: run options.
        train_data: real training items ``{"image": array (C, H, W) in [0, 1] or file path, "label": int}``;
            may be None/empty only when ``real_fraction == 0``.
        val_data: real validation items (model selection).
        test_data: real held-out test items.
        synthetic_data: synthetic items, required when the config uses synthetic data.
        output_dir: local folder for the state dict, figures and (default) the MLflow store.
        tracking_uri: MLflow URI; default ``sqlite:///<output_dir>/mlruns.db`` (``$MLFLOW_TRACKING_URI`` is not
            read: :func:`monai_synth.handlers.resolve_tracking_uri`).
        experiment_name: MLflow experiment.
        track: False disables MLflow.
        on_unreachable: ``"raise"`` (default: a :class:`TrackingUnavailableError` naming the URI before any
            training) or ``"warn"`` (log a warning and train without tracking).
        parent_run_id: make the run a nested child of this run.
        run_tags: extra tags (merged with ``config.tags``).
        extra_params: extra params to log (e.g. the study name).
        device: torch device; default CUDA if available else CPU.
        log_weights: also upload the best state dict to the MLflow run (default: kept in ``output_dir`` only).

    Returns:
        :class:`RunResult`.
    """
    if on_unreachable not in ("raise", "warn"):
        raise ValueError(f"`on_unreachable` must be one of ['raise', 'warn'], got {on_unreachable!r}.")
    t0 = time.time()
    stages, val_items, test_items, sizes = _plan_stages(config, train_data, val_data, test_data, synthetic_data)
    spatial_size = _spatial_size(val_items)
    chash = config.config_hash()
    out_dir = ensure_writable_dir(Path(output_dir) / "runs" / f"{config.name or 'run'}_{chash}")
    client, run_id = _open_run(tracking_uri, output_dir, experiment_name, on_unreachable, config, chash,
                               run_tags, parent_run_id) if track else (None, None)  # fmt: skip
    status = "FAILED"
    try:
        if client is not None:
            params = {**config.to_dict(), **sizes, "config_hash": chash, **(extra_params or {})}
            params.pop("tags")
            mx.log_params(client, run_id, params)
        set_determinism(seed=config.seed)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        network = build_classifier(config.network, spatial_dims=len(spatial_size), in_channels=config.in_channels,
                                   num_classes=config.num_classes, pretrained_path=config.pretrained_path)  # fmt: skip
        network = network.to(dev)
        history, best_val, best_epoch = _run_stages(
            network, stages, val_items, config, spatial_size, dev, client, run_id, experiment_name, chash
        )
        set_determinism(seed=None)
        metrics, cm, figures = _test(network, test_items, config, dev, history, config.name or chash, out_dir)
        model_path = atomic_torch_save(network.state_dict(), out_dir / "best_state_dict.pt")
        results = {"config_hash": chash, "test": metrics, "confusion_matrix": cm.tolist(), "best_val": best_val,
                   "best_epoch": best_epoch, "history": history, "data_sizes": sizes}  # fmt: skip
        with atomic_path(out_dir / "results.json") as tmp:
            tmp.write_text(json.dumps(results, indent=2, default=str))
        if client is not None:
            _log_test_results(client, run_id, metrics, cm, figures, results, model_path if log_weights else None)
        status = "FINISHED"
        result = RunResult(config, chash, metrics, best_val_metric=best_val, best_epoch=best_epoch, history=history,
                           confusion_matrix=cm, data_sizes=sizes, run_id=run_id, model_path=str(model_path),
                           wall_time_s=time.time() - t0)  # fmt: skip
        logger.info("[%s] test: %s", chash, {m: round(v, 4) for m, v in metrics.items()})
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if client is not None:
            mx.end_run(client, run_id, status)


def _mlflow_handlers(client, run_id: str, experiment_name: str, epoch_offset: int) -> list:
    """[trainer handler, evaluator handler] of MONAI's ``MLFlowHandler`` writing into the existing run ``run_id``.

    MONAI's handler would otherwise pick or create a run by name itself (and reuse any non-FINISHED run, e.g. a
    FAILED one); handing it our run and our client keeps one run per config, also when ``$MLFLOW_TRACKING_URI``
    differs from the URI given to :func:`train_classifier`.
    """
    from monai.handlers import MLFlowHandler

    out = []
    for _ in range(2):
        h = MLFlowHandler(
            tracking_uri=str(client.tracking_uri),
            iteration_log=False,
            epoch_log=True,
            global_epoch_transform=lambda e, o=epoch_offset: e + o,
            experiment_name=experiment_name,
            close_on_complete=False,
        )
        h.client = client
        h.cur_run = client.get_run(run_id)
        out.append(h)
    return out
