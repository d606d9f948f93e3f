"""Peer implementations timed by ``benchmarks/run.py``: lucidrains' CFG DDPM and a diffusers ``UNet2DModel``.

Each builder returns a :class:`Workload` with a zero-argument ``step`` (one training step, or one full sampling
run) so the harness times every library the same way. Peers are optional: a builder raises
:class:`PeerUnavailable` with the install hint when its package is missing.

lucidrains (seed 000's tool)
    ``denoising_diffusion_pytorch.classifier_free_guidance`` only imports torch, einops and tqdm, but the
    package's ``__init__`` imports ``denoising_diffusion_pytorch.py``, which imports torchvision, accelerate,
    ema-pytorch and scipy at module level. torchvision cannot be installed beside the CPU torch wheel of this
    project, so :func:`load_lucidrains_cfg` loads ``classifier_free_guidance.py`` *by file path* from the
    installed package, without running the package ``__init__``. No stub module is registered and none of
    the timed code (``Unet``, ``GaussianDiffusion.forward`` / ``ddim_sample``) touches torchvision.
    Install: ``pip install --no-deps denoising-diffusion-pytorch`` (einops and tqdm are already here).

diffusers
    ``UNet2DModel`` with the same blocks as MONAI's ``DiffusionModelUNet`` (MONAI's network is a port of it),
    so the parameter count is identical; attention uses diffusers' default SDPA processor. Sampling is a
    manual classifier-free-guidance loop with ``DDIMScheduler``, conditional and unconditional halves batched
    in one forward pass, exactly like ``monai_synth.inferers.sample``. Install: ``pip install diffusers``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PeerUnavailable",
    "Workload",
    "diffusers_sample",
    "diffusers_train",
    "load_lucidrains_cfg",
    "lucidrains_sample",
    "lucidrains_train",
    "num_params",
]

NUM_TRAIN_TIMESTEPS = 1000


class PeerUnavailable(RuntimeError):
    """A peer package is missing; the message says how to install it."""


@dataclass
class Workload:
    """One timed unit of work.

    Attributes:
        step: zero-argument callable doing the work once (a training step, or sampling a whole batch).
        items: images produced/consumed per ``step`` call (for images/s).
        params: trainable parameters of the network.
        config: description of what is timed (recorded in the JSON).
        model: the network (for FLOP counting), or ``None``.
        forward: zero-argument callable running ONE denoiser forward with the step's input shapes, or ``None``.
    """

    step: Callable[[], Any]
    items: int
    params: int
    config: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    forward: Callable[[], Any] | None = None


def num_params(model: nn.Module) -> int:
    """Number of parameters (trainable or frozen)."""
    return sum(p.numel() for p in model.parameters())


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp)


# ----------------------------------------------------------------------------------------------- lucidrains
_LUCIDRAINS_MODULE = "_bench_lucidrains_cfg"


def load_lucidrains_cfg():
    """Load ``denoising_diffusion_pytorch/classifier_free_guidance.py`` without the package ``__init__``.

    Returns:
        the loaded module (``Unet``, ``GaussianDiffusion``), with its tqdm progress bar replaced by a pass-through
        so progress-bar printing is not timed.

    Raises:
        PeerUnavailable: when the package is not installed.
    """
    if _LUCIDRAINS_MODULE in sys.modules:
        return sys.modules[_LUCIDRAINS_MODULE]
    spec = importlib.util.find_spec("denoising_diffusion_pytorch")  # locates the package; does not import it
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailable(
            "denoising-diffusion-pytorch is not installed: `pip install --no-deps denoising-diffusion-pytorch`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "classifier_free_guidance.py"
    file_spec = importlib.util.spec_from_file_location(_LUCIDRAINS_MODULE, path)
    if file_spec is None or file_spec.loader is None:
        raise PeerUnavailable(f"cannot load {path}.")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[_LUCIDRAINS_MODULE] = module
    try:
        file_spec.loader.exec_module(module)
    except ImportError as err:
        del sys.modules[_LUCIDRAINS_MODULE]
        raise PeerUnavailable(f"{path} failed to import: {err}") from err
    module.tqdm = lambda iterable, *args, **kwargs: iterable
    return module


def _lucidrains_diffusion(image_size: int, num_classes: int, dim: int, dim_mults, sampling_steps: int | None):
    mod = load_lucidrains_cfg()
    unet = mod.Unet(dim=dim, dim_mults=tuple(dim_mults), num_classes=num_classes, channels=1, cond_drop_prob=0.1)
    diffusion = mod.GaussianDiffusion(
        unet,
        image_size=image_size,
        timesteps=NUM_TRAIN_TIMESTEPS,
        sampling_timesteps=sampling_steps,
        ddim_sampling_eta=0.0,
    )
    return diffusion


def lucidrains_train(
    image_size: int,
    batch: int,
    num_classes: int,
    device: torch.device,
    dim: int = 32,
    dim_mults=(1, 2, 4),
    amp: bool = False,
    seed: int = 0,
) -> Workload:
    """One optimiser step of lucidrains' ``GaussianDiffusion`` (CFG ``Unet``, seed 000 configuration)."""
    torch.manual_seed(seed)
    diffusion = _lucidrains_diffusion(image_size, num_classes, dim, dim_mults, None).to(device)
    diffusion.train()
    opt = torch.optim.Adam(diffusion.parameters(), lr=1e-4)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.rand(batch, 1, image_size, image_size, generator=gen).to(device)
    labels = torch.randint(0, num_classes, (batch,), generator=gen).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            loss = diffusion(images, classes=labels)
        loss.backward()
        opt.step()

    unet = diffusion.model
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch,), generator=gen).to(device)
    return Workload(
        step=step,
        items=batch,
        params=num_params(unet),
        config={
            "library": "denoising-diffusion-pytorch",
            "model": "classifier_free_guidance.Unet",
            "dim": dim,
            "dim_mults": list(dim_mults),
            "cond_drop_prob": 0.1,
            "optimizer": "Adam",
            "objective": "pred_noise",
        },
        model=unet,
        forward=lambda: unet(images, t, labels, cond_drop_prob=0.0),
    )


def lucidrains_sample(
    image_size: int,
    batch: int,
    num_classes: int,
    device: torch.device,
    steps: int,
    guidance_scale: float,
    dim: int = 32,
    dim_mults=(1, 2, 4),
    amp: bool = False,
    seed: int = 0,
) -> Workload:
    """``GaussianDiffusion.sample(classes, cond_scale=w)`` with DDIM (``sampling_timesteps=steps``, eta 0).

    lucidrains' CFG runs the conditional and the unconditional forward one after the other (two passes of
    batch ``B``), and by default removes the parallel component of the guidance update; ``rescaled_phi=0``
    disables its std-rescaling so the guidance is plain CFG plus that projection.
    """
    if steps >= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"`steps` must be < {NUM_TRAIN_TIMESTEPS} for DDIM sampling, got {steps}.")
    torch.manual_seed(seed)
    diffusion = _lucidrains_diffusion(image_size, num_classes, dim, dim_mults, steps).to(device).eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    labels = torch.randint(0, num_classes, (batch,), generator=gen).to(device)

    def step() -> torch.Tensor:
        with torch.inference_mode(), _autocast(device, amp):
            return diffusion.sample(labels, cond_scale=guidance_scale, rescaled_phi=0.0)

    return Workload(
        step=step,
        items=batch,
        params=num_params(diffusion.model),
        config={
            "library": "denoising-diffusion-pytorch",
            "sampler": "ddim_sample (eta 0)",
            "steps": steps,
            "cond_scale": guidance_scale,
            "rescaled_phi": 0.0,
            "cfg_passes": "2 separate forwards of B",
            "dim": dim,
            "dim_mults": list(dim_mults),
        },
        model=diffusion.model,
    )


# ------------------------------------------------------------------------------------------------ diffusers
def diffusers_unet(
    image_size: int,
    num_classes: int,
    channels=(32, 64, 64),
    attention_levels=(False, False, True),
    num_res_blocks: int = 1,
    head_channels: int = 8,
    norm_num_groups: int = 32,
) -> nn.Module:
    """``UNet2DModel`` mirroring a MONAI ``DiffusionModelUNet`` configuration (same blocks, same parameter count).

    ``num_class_embeds = num_classes + 1`` (the last index is the null class), like ``monai_synth``.

    Raises:
        PeerUnavailable: when diffusers is not installed.
    """
    try:
        from diffusers import UNet2DModel
    except ImportError as err:
        raise PeerUnavailable(f"diffusers is not installed (`pip install diffusers`): {err}") from err
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels))
    return UNet2DModel(
        sample_size=image_size,
        in_channels=1,
        out_channels=1,
        layers_per_block=num_res_blocks,
        block_out_channels=tuple(channels),
        down_block_types=down,
        up_block_types=up,
        num_class_embeds=num_classes + 1,
        norm_num_groups=norm_num_groups,
        norm_eps=1e-6,
        attention_head_dim=head_channels,
    )


def diffusers_train(
    image_size: int,
    batch: int,
    num_classes: int,
    device: torch.device,
    unet_kwargs: dict | None = None,
    amp: bool = False,
    seed: int = 0,
    cond_drop_prob: float = 0.1,
) -> Workload:
    """One optimiser step of diffusers ``UNet2DModel`` + ``DDPMScheduler.add_noise`` with CFG label dropout."""
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    model = diffusers_unet(image_size, num_classes, **(unet_kwargs or {})).to(device).train()
    scheduler = DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    images = (torch.rand(batch, 1, image_size, image_size, generator=gen) * 2 - 1).to(device)
    labels = torch.randint(0, num_classes, (batch,), generator=gen).to(device)

    def step() -> None:
        noise = torch.randn_like(images)
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch,), device=device)
        drop = torch.rand(batch, device=device) < cond_drop_prob
        y = torch.where(drop, torch.full_like(labels, num_classes), labels)
        opt.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            noisy = scheduler.add_noise(images, noise, t)
            loss = F.mse_loss(model(noisy, t, class_labels=y).sample.float(), noise)
        loss.backward()
        opt.step()

    t0 = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch,), generator=gen).to(device)
    return Workload(
        step=step,
        items=batch,
        params=num_params(model),
        config={
            "library": "diffusers",
            "model": "UNet2DModel",
            "optimizer": "Adam",
            "cond_drop_prob": cond_drop_prob,
            **(unet_kwargs or {}),
        },
        model=model,
        forward=lambda: model(images, t0, class_labels=labels).sample,
    )


def diffusers_sample(
    image_size: int,
    batch: int,
    num_classes: int,
    device: torch.device,
    steps: int,
    guidance_scale: float,
    unet_kwargs: dict | None = None,
    amp: bool = False,
    seed: int = 0,
) -> Workload:
    """Manual CFG loop: ``DDIMScheduler`` (eta 0), conditional + null-class halves in ONE forward of ``2B``."""
    from diffusers import DDIMScheduler

    torch.manual_seed(seed)
    model = diffusers_unet(image_size, num_classes, **(unet_kwargs or {})).to(device).eval()
    model.requires_grad_(False)
    scheduler = DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    labels = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    labels_in = torch.cat([labels, torch.full_like(labels, num_classes)])

    def step() -> torch.Tensor:
        scheduler.set_timesteps(steps)
        x = torch.randn(batch, 1, image_size, image_size, generator=gen).to(device)
        with torch.inference_mode(), _autocast(device, amp):
            for t in scheduler.timesteps:
                out = model(torch.cat([x, x]), t, class_labels=labels_in).sample
                cond, uncond = out.float().chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
                x = scheduler.step(eps, t, x).prev_sample
        return x

    return Workload(
        step=step,
        items=batch,
        params=num_params(model),
        config={
            "library": "diffusers",
            "sampler": "DDIMScheduler (eta 0), manual CFG loop",
            "steps": steps,
            "guidance_scale": guidance_scale,
            "cfg_passes": "1 batched forward of 2B",
            **(unet_kwargs or {}),
        },
        model=model,
    )
