"""The end-to-end chain: real data -> class-conditional diffusion model -> labelled synthetic set -> evidence.

One function family serves the ``augmentation_study`` bundle (the project's main job) and
``benchmarks/utility.py`` (issue: useful synthetic data on a CPU budget):

1. :func:`load_labelled_splits` reads a labelled 2D data set (built-in demo DICOM studies, a MedMNIST ``.npz``,
   a folder of PNGs by class with train/valid/test splits, or a MONAI datalist JSON) into in-memory items
   ``{"image": float32 (1, H, W) in [0, 1], "label": int}`` at one resolution;
2. :func:`train_generator` trains the default class-conditional ``DiffusionModelUNet`` with classifier-free
   guidance (Ho & Salimans 2022) on the training split under an epoch and/or wall-clock budget;
3. :func:`synthesize` samples a class-balanced labelled set with CFG + DDIM and writes it (PNG + datalist JSON);
4. :func:`run_pipeline` adds the classifier study (real / synthetic / synthetic-pretrained + real fine-tuning,
   seed 000 Table 2) logged to MLflow, and optionally FID (seed 000 Table 1), and writes a JSON summary.
"""

from __future__ import annotations

import dataclasses
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
import torch.nn.functional as F
from monai.networks.schedulers import DDIMScheduler

from monai_synth.utils.io import atomic_path, ensure_writable_dir

__all__ = [
    "DATA_SOURCES",
    "DiffusionRecipe",
    "GeneratorResult",
    "load_labelled_splits",
    "train_generator",
    "load_generator",
    "synthesize",
    "AugmentationStudy",
    "reduced_grid",
    "run_pipeline",
]

logger = logging.getLogger(__name__)

DATA_SOURCES = ("demo", "medmnist", "folder", "datalist", "dicom")
_SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------------------------------------------- data
def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` to ``size`` x ``size`` with anti-aliasing (area-like when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    shrink = images.shape[-1] > size or images.shape[-2] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink).clamp(0, 1)


def _items(images: np.ndarray | torch.Tensor, labels: Sequence[int]) -> list[dict[str, Any]]:
    images = torch.as_tensor(images, dtype=torch.float32)
    return [{"image": images[i].numpy(), "label": int(labels[i])} for i in range(len(labels))]


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)


def _load_files(paths: Sequence[str], size: int, window: str | None) -> torch.Tensor:
    """Load 2D image files (DICOM, PNG, NIfTI, ...) into ``(N, 1, size, size)`` in [0, 1]."""
    from monai.transforms import LoadImage

    import monai_synth.data  # noqa: F401  (registers the project's readers)
    from monai_synth.transforms import HUWindow, ScaleToHU

    dicom_loader = LoadImage(reader="ClinicalDicomReader", image_only=True, ensure_channel_first=True)
    other_loader = LoadImage(image_only=True, ensure_channel_first=True)
    to_hu, windowing = ScaleToHU(), (HUWindow(window) if window else None)
    out = []
    for p in paths:
        is_dicom = str(p).lower().endswith(".dcm") or Path(p).is_dir()
        img = (dicom_loader if is_dicom else other_loader)(p)
        if windowing is not None:
            img = windowing(to_hu(img))
        x = torch.as_tensor(np.asarray(img), dtype=torch.float32)
        if x.ndim == 4:  # (C, W, H, D): a volume (series folder) -> its middle slice
            x = x[..., x.shape[-1] // 2]
        if x.shape[0] > 1:  # RGB(A) PNG -> grayscale
            x = x[:3].mean(0, keepdim=True)
        # MONAI readers return (C, W, H) for 2D files (first spatial axis = columns): transpose to rows first
        x = x.transpose(-1, -2)
        out.append(x if windowing is not None else _minmax(x))
    return _resize(torch.stack(out), size)


def load_labelled_splits(
    source: str = "demo",
    path: str | os.PathLike | None = None,
    image_size: int = 28,
    work_dir: str | os.PathLike = "./outputs",
    demo_kind: str = "cxr",
    demo_n_per_class: int = 150,
    demo_size: int = 64,
    window: str | None = None,
    seed: int = 0,
    labels_csv: str | os.PathLike | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Read a labelled 2D classification data set into memory, split into train/val/test.

    Args:
        source: ``"demo"`` (built-in DICOM demo studies written to ``work_dir/demo_data``), ``"medmnist"`` (a
            MedMNIST ``.npz`` at ``path``), ``"folder"`` (``path/{train,valid|val,test}/<class>/*.png``) or
            ``"datalist"`` (a MONAI datalist JSON with ``training``/``validation``/``test`` lists) or ``"dicom"``
            (a folder of DICOM studies at ``path`` + ``labels_csv``, split 70/15/15 stratified by label).
        path: the data file/folder (not used by ``"demo"``).
        image_size: output resolution (square).
        work_dir: where demo data is written.
        demo_kind, demo_n_per_class, demo_size: demo generator settings (see :func:`make_demo_dataset`).
        window: HU window preset applied to DICOM files (e.g. ``"lung"`` for CT); ``None``: per-image min-max.
        seed: demo data seed and the split seed of ``"dicom"``.
        labels_csv: the label CSV of ``"dicom"`` (columns ``id``, ``label``; see :func:`dicom_folder_datalist`).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` of ``{"image": float32 (1, S, S) in [0, 1], "label"}``.

    Raises:
        ValueError: unknown ``source`` or a missing ``path``.
    """
    if source not in DATA_SOURCES:
        raise ValueError(f"`source` must be one of {list(DATA_SOURCES)}, got {source!r}.")
    if source != "demo" and path is None:
        raise ValueError(f"`path` is required for source={source!r} (a file or folder with the data).")
    if source == "medmnist":
        from monai_synth.data import load_medmnist_npz

        out = {}
        for split in _SPLITS:
            imgs, labels = load_medmnist_npz(path, split)
            x = torch.as_tensor(imgs, dtype=torch.float32) / 255.0
            x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).mean(1, keepdim=True)
            out[split] = _items(_resize(x, image_size), labels)
        return out
    if source == "demo":
        from monai_synth.data import make_demo_dataset

        datalist = make_demo_dataset(
            Path(work_dir) / "demo_data", kind=demo_kind, n_per_class=demo_n_per_class, size=demo_size, seed=seed
        )
        if window is None and demo_kind == "ct":
            window = "lung"
        lists = {"train": datalist["training"], "val": datalist["validation"], "test": datalist["test"]}
    elif source == "folder":
        from monai_synth.data import image_folder_datalist

        lists = {}
        for split, names in (("train", ("train",)), ("val", ("valid", "val")), ("test", ("test",))):
            for name in names:
                if (Path(path) / name).is_dir():
                    lists[split] = list(image_folder_datalist(path, split=name).items)
                    break
            else:
                raise ValueError(f"Folder {str(path)!r} has no {'/'.join(names)} split folder; see docs/data.md.")
    elif source == "dicom":
        from monai_synth.data import dicom_folder_datalist, split_datalist

        if labels_csv is None:
            raise ValueError("source='dicom' needs `labels_csv` (a CSV with columns id,label naming each study).")
        items = list(dicom_folder_datalist(path, labels_csv).items)
        parts = split_datalist(items, ratios=(0.7, 0.15, 0.15), seed=seed, stratify=True)
        lists = {"train": parts["training"], "val": parts["validation"], "test": parts["test"]}
    else:
        from monai_synth.data import load_datalist_json

        lists = {
            split: load_datalist_json(path, key)
            for split, key in (("train", "training"), ("val", "validation"), ("test", "test"))
        }
    return {
        split: _items(_load_files([it["image"] for it in items], image_size, window), [it["label"] for it in items])
        for split, items in lists.items()
    }


# -------------------------------------------------------------------------------------------------- generator
@dataclass
class DiffusionRecipe:
    """Settings of the class-conditional diffusion generator (the bundle defaults; see docs/diffusion.md).

    Args:
        image_size: training/sampling resolution.
        channels, attention_levels, num_res_blocks, num_head_channels: ``DiffusionModelUNet`` shape.
        schedule: beta schedule (``cosine``: Nichol & Dhariwal 2021; seed 000).
        prediction_type: ``epsilon`` or ``v_prediction``.
        loss: ``l1`` (seed 000), ``l2`` (seeds 001/003) or ``huber`` (seed 002).
        num_train_timesteps: T.
        lr: Adam learning rate (linear warm-up over ``warmup_iters``, then constant); 1e-3 is the CPU-budget default
            (docs/synthetic_utility.md).
        warmup_iters: learning-rate warm-up iterations.
        batch_size: images per step.
        epochs: maximum epochs.
        train_minutes: wall-clock budget (training stops at the first of ``epochs`` and this).
        ema_decay: EMA decay (with warm-up: early weights are not frozen into the average).
        cond_drop_prob: CFG label dropout.
        hflip: random horizontal flips during diffusion training.
        guidance_scale: CFG weight w at sampling. 1 (the default) samples the conditional model alone, one network
            pass per step; on PneumoniaMNIST it gave a lower FID than w = 1.5 or 2 at less than half the sampling
            time, and its synthetic-only classifier reached 0.86 test accuracy (docs/synthetic_utility.md).
        sample_steps: DDIM steps at sampling. With eta = 1 the step count matters: on PneumoniaMNIST FID against the
            real test set was 119.6 / 53.9 / 45.2 / 44.1 at 10 / 25 / 50 / 100 steps (N = 500), so 50 is the default.
        sample_eta: DDIM eta (Song et al. 2021, Eq. 16): 1 = DDPM-like stochastic steps, 0 = deterministic. On a
            generator trained for ~25 CPU epochs, eta=0 left 36-44 % of PneumoniaMNIST samples visibly noisy
            (more high-frequency energy than any real image) while eta=1 left none (docs/studies.md).
        grad_clip_norm: gradient-norm clipping.
        seed: training seed.
    """

    image_size: int = 28
    channels: tuple[int, ...] = (32, 64, 64)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    num_head_channels: int = 32
    schedule: str = "cosine"
    prediction_type: str = "epsilon"
    loss: str = "l1"
    num_train_timesteps: int = 1000
    lr: float = 1e-3
    warmup_iters: int = 200
    batch_size: int = 64
    epochs: int = 10
    train_minutes: float | None = None
    ema_decay: float = 0.999
    cond_drop_prob: float = 0.1
    hflip: bool = False
    guidance_scale: float = 1.0
    sample_steps: int = 50
    sample_eta: float = 1.0
    grad_clip_norm: float | None = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        for name in ("image_size", "batch_size", "epochs", "sample_steps", "num_train_timesteps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"DiffusionRecipe.{name} must be an integer >= 1, got {v!r}.")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"DiffusionRecipe.lr must be a finite number > 0, got {self.lr!r}.")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ValueError(f"DiffusionRecipe.cond_drop_prob must be in [0, 1], got {self.cond_drop_prob!r}.")
        if not 0.0 <= self.sample_eta <= 1.0:
            raise ValueError(f"DiffusionRecipe.sample_eta must be in [0, 1], got {self.sample_eta!r}.")
        if not math.isfinite(self.guidance_scale):
            raise ValueError(f"DiffusionRecipe.guidance_scale must be finite, got {self.guidance_scale!r}.")
        if self.sample_steps > self.num_train_timesteps:
            raise ValueError(
                f"DiffusionRecipe.sample_steps ({self.sample_steps}) cannot exceed num_train_timesteps "
                f"({self.num_train_timesteps})."
            )
        if self.train_minutes is not None and not self.train_minutes > 0:
            raise ValueError(f"DiffusionRecipe.train_minutes must be > 0 or None, got {self.train_minutes!r}.")


@dataclass
class GeneratorResult:
    """A trained generator: the EMA network, the training scheduler and what training measured."""

    model: torch.nn.Module
    scheduler: Any
    num_classes: int
    epochs: int
    iterations: int
    wall_s: float
    img_per_s: float
    checkpoint_dir: str
    final_loss: float = float("nan")
    history: dict[str, list] = field(default_factory=dict)


class _DiffusionItems(torch.utils.data.Dataset):
    """In-memory items -> ``{"image": (1, H, W) in [-1, 1], "label"}``, with optional random horizontal flip."""

    def __init__(self, items: Sequence[Mapping[str, Any]], hflip: bool, seed: int) -> None:
        self.images = torch.stack([torch.as_tensor(np.asarray(it["image"]), dtype=torch.float32) for it in items])
        self.images = self.images * 2.0 - 1.0
        self.labels = torch.as_tensor([int(it["label"]) for it in items], dtype=torch.long)
        self.hflip = hflip
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.images[i]
        if self.hflip and self.rng.random() < 0.5:
            x = x.flip(-1)
        return {"image": x, "label": self.labels[i]}


class _WarmupLr:
    """Linear learning-rate warm-up over the first ``iters`` iterations (Goyal et al. 2017), then constant."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, iters: int) -> None:
        self.optimizer, self.lr, self.iters = optimizer, lr, max(0, int(iters))

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine) -> None:
        scale = 1.0 if self.iters == 0 else min(1.0, engine.state.iteration / self.iters)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr * scale


class _TimeBudget:
    """Terminate training once ``seconds`` of wall-clock have passed (checked after every iteration)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = float(seconds), None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _start(self, engine) -> None:
        self.start = time.perf_counter()

    def __call__(self, engine) -> None:
        if time.perf_counter() - self.start >= self.seconds:
            logger.info("time budget of %.0f s reached at epoch %d", self.seconds, engine.state.epoch)
            engine.terminate()


class _LossHistory:
    """Mean loss and wall-clock seconds since the start of this process's training, per epoch."""

    def __init__(self) -> None:
        self.history: dict[str, list] = {"epoch": [], "loss": [], "elapsed_s": []}
        self._sum, self._n = 0.0, 0
        self.start_iteration = 0
        self._t0 = time.perf_counter()

    def attach(self, engine) -> None:
        from ignite.engine import Events

        # attached after the checkpoint resumer, so this sees the resumed iteration
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iter)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _start(self, engine) -> None:
        self.start_iteration = int(engine.state.iteration)
        self._t0 = time.perf_counter()

    def _iter(self, engine) -> None:
        out = engine.state.output
        out = out[0] if isinstance(out, (list, tuple)) else out  # decollated batch: the loss is on every item
        self._sum += float(torch.as_tensor(out["loss"]).detach())
        self._n += 1

    def _epoch(self, engine) -> None:
        self.history["epoch"].append(engine.state.epoch)
        self.history["loss"].append(self._sum / max(1, self._n))
        self.history["elapsed_s"].append(time.perf_counter() - self._t0)
        self._sum, self._n = 0.0, 0


def train_generator(
    train_items: Sequence[Mapping[str, Any]],
    recipe: DiffusionRecipe | None = None,
    out_dir: str | os.PathLike = "./outputs/generator",
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    sample_every: int = 0,
    progress: bool = False,
    train_handlers: Sequence | None = None,
) -> GeneratorResult:
    """Train the class-conditional diffusion generator on in-memory items under the recipe's budget.

    Checkpoints (model, EMA, optimizer, epoch) are written atomically to ``out_dir/checkpoints`` every epoch; a
    second call with the same ``out_dir`` resumes from the latest one.

    Args:
        train_items: ``{"image": (1, H, W) in [0, 1], "label": int}`` at ``recipe.image_size``.
        recipe: settings (default :class:`DiffusionRecipe`).
        out_dir: checkpoints and sample grids.
        num_classes: number of classes (default: ``max(label) + 1``).
        device: torch device.
        sample_every: write a sample grid every this many epochs (0: never).
        progress: show a progress bar.
        train_handlers: extra handlers (e.g. MONAI's ``MLFlowHandler``).

    Returns:
        :class:`GeneratorResult` with the EMA network in eval mode.
    """
    from monai_synth.engines.diffusion import build_diffusion_trainer

    recipe = recipe or DiffusionRecipe()
    if not train_items:
        raise ValueError("`train_items` is empty: the generator needs labelled training images.")
    shape = tuple(np.asarray(train_items[0]["image"]).shape)
    if shape[-2:] != (recipe.image_size, recipe.image_size):
        raise ValueError(
            f"training images are {shape[-2:]} but recipe.image_size is {recipe.image_size}; "
            "load the data at the recipe's size (load_labelled_splits(image_size=...))."
        )
    labels = [int(it["label"]) for it in train_items]
    num_classes = int(num_classes if num_classes is not None else max(labels) + 1)
    torch.manual_seed(recipe.seed)
    device = torch.device(device)
    network, scheduler = _build_network_and_scheduler(recipe, num_classes, in_channels=shape[0])
    network = network.to(device)
    ds = _DiffusionItems(train_items, recipe.hflip, recipe.seed)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=recipe.batch_size,
        shuffle=True,
        drop_last=len(ds) > recipe.batch_size,
        generator=torch.Generator().manual_seed(recipe.seed),
    )
    out_dir = ensure_writable_dir(out_dir)
    losses = _LossHistory()
    handlers: list = [losses]
    if recipe.train_minutes is not None:
        handlers.append(_TimeBudget(recipe.train_minutes * 60.0))
    handlers.extend(train_handlers or [])
    optimizer = torch.optim.Adam(network.parameters(), lr=recipe.lr, betas=(0.9, 0.999), eps=1e-8)
    handlers.insert(0, _WarmupLr(optimizer, recipe.lr, recipe.warmup_iters))
    trainer = build_diffusion_trainer(
        network,
        scheduler,
        loader,
        max_epochs=recipe.epochs,
        device=device,
        num_classes=num_classes,
        cond_drop_prob=recipe.cond_drop_prob,
        loss=recipe.loss,
        optimizer=optimizer,
        ema_decay=recipe.ema_decay,
        ema_warmup=True,
        grad_clip_norm=recipe.grad_clip_norm,
        checkpoint_dir=out_dir / "checkpoints",
        checkpoint_every=1,
        sample_dir=(out_dir / "samples") if sample_every else None,
        sample_every=max(1, sample_every),
        sample_shape=shape,
        guidance_scale=recipe.guidance_scale,
        sample_steps=recipe.sample_steps,
        progress=progress,
        train_handlers=handlers,
    )
    t0 = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - t0
    iters = int(trainer.state.iteration)
    model = trainer.ema_model if trainer.ema_model is not None else network
    model = getattr(model, "module", model)
    model.eval()
    img_per_s = float(trainer.state.metrics.get("img_per_s", float("nan")))
    if not math.isfinite(img_per_s):  # the throughput handler reports at epoch end only
        img_per_s = (iters - losses.start_iteration) * recipe.batch_size / max(wall, 1e-9)
    stats = {
        "epochs": int(trainer.state.epoch),
        "iterations": iters,
        "wall_s": wall,
        "img_per_s": img_per_s,
        "final_loss": losses.history["loss"][-1] if losses.history["loss"] else float("nan"),
        "history": losses.history,
    }
    with atomic_path(out_dir / _DONE) as tmp:
        tmp.write_text(json.dumps(stats))
    return GeneratorResult(
        model=model, scheduler=scheduler, num_classes=num_classes, checkpoint_dir=str(out_dir / "checkpoints"), **stats
    )


def _build_network_and_scheduler(recipe: DiffusionRecipe, num_classes: int, in_channels: int = 1):
    from monai_synth.engines.diffusion import build_diffusion_unet, build_scheduler

    network = build_diffusion_unet(
        num_classes=num_classes,
        in_channels=in_channels,
        channels=recipe.channels,
        attention_levels=recipe.attention_levels,
        num_res_blocks=recipe.num_res_blocks,
        num_head_channels=recipe.num_head_channels,
    )
    scheduler = build_scheduler(
        "ddpm",
        num_train_timesteps=recipe.num_train_timesteps,
        schedule=recipe.schedule,
        prediction_type=recipe.prediction_type,
    )
    return network, scheduler


_DONE = "generator_done.json"


def load_generator(
    out_dir: str | os.PathLike, recipe: DiffusionRecipe, num_classes: int, device: str | torch.device = "cpu"
) -> GeneratorResult:
    """Load the EMA generator that :func:`train_generator` finished in ``out_dir`` (its latest checkpoint).

    Raises:
        FileNotFoundError: when ``out_dir`` holds no finished training (no ``generator_done.json``).
    """
    from monai_synth.handlers.checkpoint import latest_checkpoint, load_checkpoint
    from monai_synth.handlers.ema import create_ema_model

    out_dir = Path(out_dir)
    done = out_dir / _DONE
    if not done.is_file():
        raise FileNotFoundError(f"{str(out_dir)!r} holds no finished generator training ({_DONE} is missing).")
    stats = json.loads(done.read_text())
    ckpt = latest_checkpoint(out_dir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {str(out_dir / 'checkpoints')!r}.")
    network, scheduler = _build_network_and_scheduler(recipe, num_classes)
    ema = create_ema_model(network, decay=recipe.ema_decay)
    load_checkpoint(ckpt, network=network, ema_model=ema, restore_rng=False)
    model = ema.module.to(device).eval()
    return GeneratorResult(
        model=model,
        scheduler=scheduler,
        num_classes=num_classes,
        checkpoint_dir=str(out_dir / "checkpoints"),
        **{k: stats[k] for k in ("epochs", "iterations", "wall_s", "img_per_s", "final_loss", "history")},
    )


def synthesize(
    generator: GeneratorResult,
    n_per_class: int,
    out_dir: str | os.PathLike,
    recipe: DiffusionRecipe | None = None,
    batch_size: int = 100,
    seed: int = 1234,
    device: str | torch.device = "cpu",
    progress: bool = False,
    privacy_train: np.ndarray | torch.Tensor | None = None,
    privacy_threshold: float | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Sample ``n_per_class`` images per class with CFG + DDIM through :func:`generate_dataset` (PNG per class +
    ``datalist.json``, atomic and resumable) and read them back.

    With ``privacy_threshold`` (and ``privacy_train``, the ``(N, 1, H, W)`` training images in ``[0, 1]``), images
    closer than the threshold to a training image are removed and reported in ``out_dir/privacy_filter.csv``
    (:func:`monai_synth.engines.privacy.filter_generated_dataset`, see docs/reliability.md) before reading back.

    ``batch_size`` images share one forward pass; on a 2-core CPU 1000 PneumoniaMNIST images at DDIM 50 took 147 s
    in batches of 100 and 215 s in batches of 250 (smaller batches stay in cache; docs/performance.md).

    Returns:
        (in-memory items ``{"image": (1, H, W) in [0, 1], "label"}`` as written to disk, wall seconds of sampling).
        The seconds are those spent sampling this set, summed over every call that wrote images into ``out_dir``
        (``out_dir/sampling_time.json``), so a call that finds the set complete reports the original cost.
    """
    from monai_synth.engines.generate import generate_dataset
    from monai_synth.evaluate import stack_items

    recipe = recipe or DiffusionRecipe()
    sched = generator.scheduler
    ddim = DDIMScheduler(
        num_train_timesteps=sched.num_train_timesteps,
        schedule=recipe.schedule,
        prediction_type=sched.prediction_type,
        clip_sample=True,
    )
    t0 = time.perf_counter()
    result = generate_dataset(
        generator.model,
        ddim,
        ensure_writable_dir(out_dir),
        num_per_class=int(n_per_class),
        num_classes=generator.num_classes,
        image_size=recipe.image_size,
        formats=("png",),
        guidance_scale=recipe.guidance_scale,
        num_inference_steps=recipe.sample_steps,
        eta=recipe.sample_eta,
        batch_size=batch_size,
        seed=seed,
        device=device,
        progress=progress,
    )
    wall = time.perf_counter() - t0
    timing = Path(result.out_dir) / "sampling_time.json"  # sampling seconds of this set, summed over resumed calls
    previous = json.loads(timing.read_text()) if timing.is_file() else {"wall_s": 0.0, "written": 0}
    if result.written:
        previous = {"wall_s": previous["wall_s"] + wall, "written": previous["written"] + result.written}
        with atomic_path(timing) as tmp:
            tmp.write_text(json.dumps(previous))
    wall = previous["wall_s"] if previous["written"] else wall
    if privacy_threshold is not None:
        if privacy_train is None:
            raise ValueError("`privacy_train` (the training images) is required with `privacy_threshold`.")
        from monai_synth.engines.privacy import filter_generated_dataset

        filter_generated_dataset(result.out_dir, privacy_train, privacy_threshold)
    from monai_synth.data.datalists import load_datalist_json

    entries = load_datalist_json(Path(result.out_dir) / "datalist.json", "training")  # absolute paths
    return _items(stack_items(entries), [int(it["label"]) for it in entries]), wall


# ------------------------------------------------------------------------------------------------------ study
def reduced_grid(
    epochs: int = 5,
    pretrain_epochs: int | None = None,
    seed: int = 0,
    rows: Sequence[int] | None = None,
    **base: Any,
) -> list:
    """The main job's reduced seed-000 Table 2 grid: real 100 % / synthetic only / synthetic PT + 10 % real /
    10 % real only, each with and without geometric augmentation (rows 1, 5, 9, 11, 13, 15, 17, 18).

    Args:
        epochs, pretrain_epochs, seed: classifier options of every arm.
        rows: keep only these Table 2 rows (default: all eight).
        base: more ``ClassifierRunConfig`` options.
    """
    from monai_synth.engines.classification import ClassifierRunConfig

    arms = [  # (table2 row, geo aug, synthetic PT, real fraction)
        (1, False, False, 1.0),
        (5, True, False, 1.0),
        (9, False, False, 0.1),
        (13, True, False, 0.1),
        (11, False, True, 0.1),
        (15, True, True, 0.1),
        (17, False, True, 0.0),
        (18, True, True, 0.0),
    ]
    return [
        ClassifierRunConfig(
            geometric_aug=geo,
            synthetic_pretrain=pt,
            real_fraction=frac,
            epochs=epochs,
            pretrain_epochs=pretrain_epochs,
            seed=seed,
            name=f"row{row}",
            tags={"table2_row": str(row)},
            **base,
        )
        for row, geo, pt, frac in arms
        if rows is None or row in set(rows)
    ]


def _stack(items: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(np.asarray(it["image"]), dtype=torch.float32) for it in items])


def run_pipeline(
    output_dir: str | os.PathLike = "./outputs/augmentation_study",
    source: str = "demo",
    path: str | os.PathLike | None = None,
    recipe: DiffusionRecipe | Mapping[str, Any] | None = None,
    demo_kind: str = "cxr",
    demo_n_per_class: int = 150,
    n_synthetic_per_class: int = 100,
    grid: str | Sequence[Any] = "reduced",
    classifier: Mapping[str, Any] | None = None,
    classifier_epochs: int = 5,
    tracking_uri: str | None = None,
    experiment: str = "augmentation_study",
    fid: bool = False,
    fid_max_images: int = 1000,
    device: str = "cpu",
    progress: bool = True,
    reuse_generator: bool = True,
    labels_csv: str | os.PathLike | None = None,
    grid_rows: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run the whole story: data -> generator -> synthetic set -> classifier study (MLflow) -> comparison.

    Args:
        output_dir: every output (checkpoints, synthetic PNGs, MLflow SQLite store, tables, summary JSON).
        source, path: see :func:`load_labelled_splits`.
        recipe: :class:`DiffusionRecipe` or a dict of its fields.
        demo_kind, demo_n_per_class: built-in demo data settings.
        n_synthetic_per_class: synthetic images per class.
        grid: ``"reduced"`` (:func:`reduced_grid`), a preset of :func:`monai_synth.study.get_grid` (e.g.
            ``"seed000_table2"``) or a list of ``ClassifierRunConfig``.
        grid_rows: with ``grid="reduced"``, keep only these Table 2 rows.
        classifier: base classifier options (``ClassifierRunConfig`` fields), e.g. ``{"batch_size": 32}``.
        classifier_epochs: epochs per classifier stage.
        tracking_uri: MLflow URI (default ``sqlite:///<output_dir>/mlruns.db``).
        experiment: MLflow experiment name.
        fid: also compute FID (Inception 2048-d, extra ``[fid]``) of synthetic vs real test and real train vs test.
        fid_max_images: images per set for FID.
        device: torch device.
        progress: progress bars.
        reuse_generator: load a generator that finished training in ``output_dir/generator`` instead of training
            again (an unfinished one resumes from its latest checkpoint either way).
        labels_csv: label CSV for ``source="dicom"``.

    Returns:
        the summary dict also written to ``output_dir/summary.json``.
    """
    from monai_synth.engines.classification import ClassifierRunConfig
    from monai_synth.study import StudyData, run_study

    output_dir = ensure_writable_dir(Path(output_dir).resolve())
    if recipe is None or isinstance(recipe, Mapping):
        recipe = DiffusionRecipe(**dict(recipe or {}))
    t_start = time.perf_counter()
    splits = load_labelled_splits(
        source, path, image_size=recipe.image_size, work_dir=output_dir, demo_kind=demo_kind,
        demo_n_per_class=demo_n_per_class, seed=recipe.seed, labels_csv=labels_csv,
    )  # fmt: skip
    sizes = {k: len(v) for k, v in splits.items()}
    logger.info("data: %s", sizes)
    num_classes = max(int(it["label"]) for it in splits["train"]) + 1
    if reuse_generator and (output_dir / "generator" / _DONE).is_file():
        gen = load_generator(output_dir / "generator", recipe, num_classes, device=device)
        logger.info("reusing the finished generator in %s", output_dir / "generator")
    else:
        gen = train_generator(
            splits["train"], recipe, output_dir / "generator", num_classes=num_classes, device=device,
            progress=progress,
        )  # fmt: skip
    logger.info("generator: %d epochs in %.1f s (%.1f img/s)", gen.epochs, gen.wall_s, gen.img_per_s)
    synthetic, sample_s = synthesize(
        gen, n_synthetic_per_class, output_dir / "synthetic", recipe, device=device, progress=progress
    )
    base = {"epochs": classifier_epochs, **dict(classifier or {})}
    base.setdefault("synthetic_datalist", str(output_dir / "synthetic" / "datalist.json"))
    base.setdefault("synthetic_checkpoint", gen.checkpoint_dir)
    if isinstance(grid, str) and grid == "reduced":
        configs: Any = reduced_grid(rows=grid_rows, **base)
    elif isinstance(grid, str):
        configs = grid
    else:
        configs = list(grid)
    results = run_study(
        configs,
        StudyData(train=splits["train"], val=splits["val"], test=splits["test"], synthetic=synthetic),
        tracking_uri=tracking_uri,
        experiment=experiment,
        output_dir=output_dir / "study",
        base=ClassifierRunConfig(**base) if isinstance(configs, str) else None,
        device=device,
        progress=progress,
        reference="seed000",
    )
    summary: dict[str, Any] = {
        "data": {"source": source, "path": None if path is None else str(path), **sizes},
        "recipe": dataclasses.asdict(recipe),
        "generator": {
            "epochs": gen.epochs,
            "iterations": gen.iterations,
            "train_minutes": gen.wall_s / 60.0,
            "img_per_s": gen.img_per_s,
            "final_loss": gen.final_loss,
            "loss_history": gen.history.get("loss", []),
        },
        "synthetic": {"n": len(synthetic), "sample_minutes": sample_s / 60.0, "dir": str(output_dir / "synthetic")},
        "runs": [
            {"name": r.config.name, "tags": dict(r.config.tags), "run_id": r.run_id, **r.test_metrics} for r in results
        ],
    }
    if fid:
        summary["fid"] = _cached_fid(output_dir / "fid.json", splits, synthetic, fid_max_images, device)
    summary["total_minutes"] = (time.perf_counter() - t_start) / 60.0
    with atomic_path(output_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=float))
    return summary


def _cached_fid(
    cache: Path,
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    synthetic: Sequence[Mapping[str, Any]],
    n: int,
    device: str,
) -> dict[str, float]:
    """:func:`_fid_summary`, reused from ``cache`` when the same image sets and ``n`` were measured before."""
    from monai_synth.study import data_fingerprint

    key = {
        "n": int(n),
        **{k: data_fingerprint(splits[k]) for k in ("train", "test")},
        "synthetic": data_fingerprint(synthetic),
    }
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text())
        except (OSError, json.JSONDecodeError):
            stored = {}
        if stored.get("key") == key:
            logger.info("FID reused from %s", cache)
            return stored["fid"]
    fid = _fid_summary(splits, synthetic, n, device)
    with atomic_path(cache) as tmp:
        tmp.write_text(json.dumps({"key": key, "fid": fid}, indent=1))
    return fid


def _fid_summary(
    splits: Mapping[str, Sequence[Mapping[str, Any]]], synthetic: Sequence[Mapping[str, Any]], n: int, device: str
) -> dict[str, float]:
    """FID (Inception 2048-d) of synthetic vs real test and of real train vs real test (seed 000 Table 1)."""
    from monai_synth.metrics import InceptionFeatureExtractor, compute_fid

    extractor = InceptionFeatureExtractor(dims=2048, device=device)
    rng = np.random.default_rng(0)

    def feats(items):
        idx = rng.permutation(len(items))[:n]
        return extractor(_stack([items[i] for i in idx]))

    f_train, f_test, f_syn = feats(splits["train"]), feats(splits["test"]), feats(synthetic)
    fid_train_test = float(compute_fid(f_train, f_test))
    fid_synth_test = float(compute_fid(f_syn, f_test))
    return {
        "fid_train_test": fid_train_test,
        "fid_synth_test": fid_synth_test,
        "fid_synth_train": float(compute_fid(f_syn, f_train)),
        "fid_ratio": fid_synth_test / fid_train_test if fid_train_test > 0 else float("inf"),
        "n_per_set": int(min(n, len(splits["test"]), len(synthetic))),
    }


class AugmentationStudy:
    """The ``augmentation_study`` bundle's runnable: holds :func:`run_pipeline` arguments, ``run()`` executes them.

    After ``run()`` the comparison table (Markdown) is in :attr:`table`; with ``echo=True`` (the bundle's default,
    since this is the command-line entry point of the main job) it is also written to standard output.
    """

    def __init__(self, echo: bool = True, **kwargs: Any) -> None:
        self.echo = echo
        self.kwargs = kwargs
        self.summary: dict[str, Any] | None = None
        self.table: str = ""

    def run(self) -> dict[str, Any]:
        """Run the pipeline; return its summary."""
        import sys

        self.summary = run_pipeline(**self.kwargs)
        out = Path(self.kwargs.get("output_dir", "./outputs/augmentation_study")).resolve()
        table_path = out / "study" / "comparison" / "comparison.md"
        self.table = table_path.read_text() if table_path.is_file() else ""
        gen, syn = self.summary["generator"], self.summary["synthetic"]
        header = (
            f"\nAugmentation study ({self.summary['data']}):\n"
            f"generator: {gen['epochs']} epochs in {gen['train_minutes']:.1f} min; "
            f"{syn['n']} synthetic images in {syn['sample_minutes']:.1f} min\n"
            f"outputs: {out}  (MLflow store: {out / 'study' / 'mlruns.db'})\n\n"
        )
        logger.info("%s%s", header, self.table)
        if self.echo:
            sys.stdout.write(header + self.table + "\n")
            sys.stdout.flush()
        return self.summary
