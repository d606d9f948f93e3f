"""One reverse-diffusion sampling loop shared by every generator in ``monai_synth``.

The loop iterates ``scheduler.timesteps`` of a MONAI scheduler (``DDPMScheduler`` or ``DDIMScheduler``), optionally
applies classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", Eq. 6) with the
conditional and unconditional branches batched into a single forward pass, and hands every intermediate sample to
an optional :class:`GuidanceStrategy` (e.g. ILVR low-pass guidance, seed 001 Eqs. 3-5).

Timestep convention: a step maps ``x_t`` to ``x_prev``; ``prev_t`` is the training timestep that ``x_prev``
belongs to, as computed by the scheduler's own ``step`` rule (``t - 1`` for MONAI's DDPM,
``t - num_train_timesteps // num_inference_steps`` for MONAI's DDIM). When that value is negative the step produced
the clean image ``x_0`` and ``prev_t`` is reported as ``-1``.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from monai.networks.schedulers import RFlowScheduler, Scheduler
from monai.utils import optional_import

from monai_synth.utils.module import unwrap_model

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = [
    "GuidanceStrategy",
    "PredictionGuidance",
    "predicted_x0",
    "is_flow",
    "output_from_x0",
    "add_noise_to_timestep",
    "previous_timestep",
    "classifier_free_guidance",
    "clip_model_output",
    "noise_level",
    "in_guidance_interval",
    "resolve_null_class",
    "sample",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class GuidanceStrategy(Protocol):
    """Hook called right after each ``scheduler.step`` inside :func:`sample`.

    ``x = guidance(x_prev, t, prev_t, scheduler, generator)`` where ``t`` is the timestep of the model input and
    ``prev_t`` the timestep ``x_prev`` corresponds to (``-1`` means ``x_prev`` is the final clean sample ``x_0``).
    Implementations must draw any noise from ``generator`` and must not keep per-step state.
    """

    def __call__(
        self,
        x_prev: torch.Tensor,
        t: int,
        prev_t: int,
        scheduler: Scheduler,
        generator: torch.Generator | None,
    ) -> torch.Tensor: ...


@runtime_checkable
class PredictionGuidance(Protocol):
    """Hook called on the network output inside :func:`sample`, before ``scheduler.step``.

    ``out = guidance(model_output, x_t, t, scheduler)`` returns an output of the same ``prediction_type``; used by
    guidance that acts on the predicted clean sample (e.g. :class:`monai_synth.inferers.LatentLowPassGuidance`).
    """

    def __call__(self, model_output: torch.Tensor, x_t: torch.Tensor, t: int, scheduler: Scheduler) -> torch.Tensor: ...


def is_flow(scheduler: Scheduler) -> bool:
    """Whether ``scheduler`` samples a rectified-flow model (MONAI's ``RFlowScheduler``, or a multistep solver of
    :mod:`monai_synth.networks.schedulers` with ``prediction_type="flow"``): ``x_t = (1 - t/T) x_0 + (t/T) eps``."""
    return isinstance(scheduler, RFlowScheduler) or getattr(scheduler, "prediction_type", None) == "flow"


def _alpha_terms(scheduler: Scheduler, t: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(
            f"{type(scheduler).__name__} is not a variance-preserving scheduler: x_0 cannot be read from its output."
        )
    alpha_bar = scheduler.alphas_cumprod[int(t)].to(device=like.device, dtype=like.dtype)
    return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()


def _flow_sigma(scheduler: Scheduler, t: int) -> float:
    """``t / T`` of a rectified-flow timestep; ``t = 0`` (the clean sample, no velocity to read) is refused."""
    if int(t) <= 0:
        raise ValueError(f"rectified flow: x_0 and the velocity determine each other only at t > 0, got t={t}.")
    return float(t) / scheduler.num_train_timesteps


def predicted_x0(scheduler: Scheduler, model_output: torch.Tensor, x_t: torch.Tensor, t: int) -> torch.Tensor:
    """The clean sample implied by a network output at ``t``: epsilon (Ho et al. 2020, Eq. 15), v (Salimans & Ho
    2022, Sec. 4: ``x_0 = sqrt(abar) x_t - sqrt(1 - abar) v``), the sample itself, or, for rectified flow (see
    :func:`is_flow`), ``x_0 = x_t + (t/T) v`` with the velocity ``v = x_0 - eps``."""
    if is_flow(scheduler):
        return x_t + _flow_sigma(scheduler, t) * model_output
    kind = getattr(scheduler, "prediction_type", "epsilon")
    sqrt_a, sqrt_1ma = _alpha_terms(scheduler, t, model_output)
    if kind == "epsilon":
        return (x_t - sqrt_1ma * model_output) / sqrt_a
    if kind == "v_prediction":
        return sqrt_a * x_t - sqrt_1ma * model_output
    if kind == "sample":
        return model_output
    raise ValueError(f"`prediction_type` must be one of ['epsilon', 'sample', 'v_prediction'], got {kind!r}.")


def output_from_x0(scheduler: Scheduler, x0: torch.Tensor, x_t: torch.Tensor, t: int) -> torch.Tensor:
    """The network output of the scheduler's ``prediction_type`` whose implied clean sample at ``(x_t, t)`` is
    ``x0`` (the inverse of :func:`predicted_x0` at fixed ``x_t``)."""
    if is_flow(scheduler):
        return (x0 - x_t) / _flow_sigma(scheduler, t)
    kind = getattr(scheduler, "prediction_type", "epsilon")
    sqrt_a, sqrt_1ma = _alpha_terms(scheduler, t, x0)
    if kind == "epsilon":
        return (x_t - sqrt_a * x0) / sqrt_1ma
    if kind == "v_prediction":
        return (sqrt_a * x_t - x0) / sqrt_1ma
    if kind == "sample":
        return x0
    raise ValueError(f"`prediction_type` must be one of ['epsilon', 'sample', 'v_prediction'], got {kind!r}.")


def previous_timestep(scheduler: Scheduler, t: int) -> int:
    """Timestep of the sample that ``scheduler.step(..., t, ...)`` returns, ``-1`` for the clean image.

    A scheduler's own ``previous_timestep(t)`` is used when it has one (the multistep solvers of
    :mod:`monai_synth.networks.schedulers`); otherwise schedulers whose ``step`` jumps by
    ``num_train_timesteps // num_inference_steps`` (MONAI's DDIM, recognised by its ``final_alpha_cumprod``
    attribute) and schedulers that step ``t -> t - 1`` (MONAI's DDPM) are supported.

    Args:
        scheduler: a MONAI scheduler after ``set_timesteps``.
        t: current timestep.
    """
    own = getattr(scheduler, "previous_timestep", None)
    if callable(own):  # schedulers that step along their own timestep list (monai_synth.networks.schedulers)
        return int(own(int(t)))
    if isinstance(scheduler, RFlowScheduler):  # Euler steps along the timestep list, the last one to t = 0
        steps = [int(s) for s in scheduler.timesteps]
        i = steps.index(int(t))
        return steps[i + 1] if i + 1 < len(steps) else -1
    if hasattr(scheduler, "final_alpha_cumprod"):
        n_inf = scheduler.num_inference_steps or scheduler.num_train_timesteps
        prev = int(t) - scheduler.num_train_timesteps // n_inf
    else:
        prev = int(t) - 1
    return prev if prev >= 0 else -1


def add_noise_to_timestep(
    scheduler: Scheduler, y: torch.Tensor, t: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample ``y_t ~ q(y_t | y_0) = N(sqrt(abar_t) y_0, (1 - abar_t) I)`` (Ho et al. 2020, Eq. 4), or
    ``N((1 - t/T) y_0, (t/T)^2 I)`` on a rectified-flow path, through the scheduler's own ``add_noise``.

    Args:
        scheduler: MONAI scheduler (or multistep solver) whose ``add_noise`` defines the forward process.
        y: clean reference ``y_0`` (batch first).
        t: target timestep; ``t < 0`` means the clean image, and ``y`` is returned unchanged.
        generator: source of the Gaussian noise (on ``y``'s device); the global RNG when ``None``.

    Returns:
        the noised reference at step ``t``.
    """
    if t < 0:
        return y
    noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    timesteps = torch.full((y.shape[0],), int(t), dtype=torch.long, device=y.device)
    return scheduler.add_noise(original_samples=y, noise=noise, timesteps=timesteps)


def classifier_free_guidance(out_cond: torch.Tensor, out_uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance combination (Ho & Salimans 2022, Eq. 6 with ``w = 1 + w_paper``).

    ``out = out_uncond + w * (out_cond - out_uncond)``: ``w = 0`` is unconditional, ``w = 1`` purely conditional,
    ``w > 1`` extrapolates towards the class. Applied to whatever the network predicts (epsilon or v); for
    v-prediction the linear combination of v's equals the combination of the implied epsilons at fixed ``x_t``
    because v is affine in epsilon with the same coefficients for both branches.
    """
    return out_uncond + guidance_scale * (out_cond - out_uncond)


def clip_model_output(scheduler: Scheduler, model_output: torch.Tensor, x_t: torch.Tensor, t: int) -> torch.Tensor:
    """Rewrite ``model_output`` so that its implied ``x_0`` is clipped and its implied epsilon agrees with it.

    MONAI's ``DDIMScheduler.step`` clips the predicted ``x_0`` but keeps the unclipped epsilon in the "direction
    pointing to x_t" term (Song et al. 2021, Eq. 12). With classifier-free guidance the extrapolated prediction often
    leaves [-1, 1]; the clip then drops the guidance from ``x_0`` while the epsilon term keeps it with the opposite
    sign, and strongly guided DDIM samples come out of the *other* class. Here ``x_0`` is computed from the output
    (epsilon: Ho et al. 2020, Eq. 15; v: Salimans & Ho 2022, Sec. 4), clipped to the scheduler's
    ``clip_sample_values`` and converted back to an output of the same ``prediction_type``; the scheduler's own clip
    is then a no-op. For DDPM (posterior mean from ``x_0`` and ``x_t`` only) the step is unchanged.
    """
    lo, hi = getattr(scheduler, "clip_sample_values", (-1.0, 1.0))
    x0 = predicted_x0(scheduler, model_output, x_t, t).clamp(lo, hi)
    return output_from_x0(scheduler, x0, x_t, t)


def _initial_noise(
    model: torch.nn.Module,
    shape: Sequence[int] | None,
    noise: torch.Tensor | None,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """``x_T``: ``noise`` on ``device``, or drawn with ``shape``; checked against the model's input channels."""
    if noise is None:
        if shape is None:
            raise ValueError("Give either `shape` or `noise` to `sample()`.")
        x = torch.randn(tuple(shape), generator=generator, device=device)
    else:
        x = noise.to(device)
    model_channels = getattr(unwrap_model(model), "in_channels", None)
    if isinstance(model_channels, int) and x.ndim > 1 and x.shape[1] != model_channels:
        raise ValueError(
            f"`shape`/`noise` has {x.shape[1]} channels but the model takes in_channels={model_channels}: "
            "use the model's channel count."
        )
    return x


def _model_labels(
    model: torch.nn.Module,
    class_labels: torch.Tensor | None,
    batch: int,
    use_cfg: bool,
    null_class: int | None,
    device: torch.device,
) -> torch.Tensor | None:
    """The labels fed to the model: ``class_labels``, followed by the null class when CFG doubles the batch."""
    if class_labels is None:
        return None
    class_labels = torch.as_tensor(class_labels, dtype=torch.long, device=device).reshape(-1)
    if class_labels.numel() != batch:
        raise ValueError(f"`class_labels` has {class_labels.numel()} entries but the batch has {batch} samples.")
    if not use_cfg:
        return class_labels
    return torch.cat([class_labels, torch.full_like(class_labels, resolve_null_class(model, null_class))])


def resolve_null_class(model: torch.nn.Module, null_class: int | None) -> int:
    """The reserved unconditional class index: ``null_class`` or ``num_class_embeds - 1`` of the (unwrapped) model.

    Raises:
        ValueError: when neither is available.
    """
    if null_class is not None:
        return int(null_class)
    n = getattr(unwrap_model(model), "num_class_embeds", None)
    if n is None:
        raise ValueError(
            "`null_class` is needed for classifier-free guidance: pass it, or use a network with "
            "`num_class_embeds=num_classes + 1` so that the last index is the null class."
        )
    return int(n) - 1


def _step_kwargs(scheduler: Scheduler, eta: float, generator: torch.Generator | None) -> dict:
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict = {"next_timestep": None} if "next_timestep" in params else {}
    if "generator" in params:
        kwargs["generator"] = generator
    if "eta" in params:
        kwargs["eta"] = eta
    elif eta != 0.0:
        raise ValueError(f"`eta`={eta} is only used by DDIM-type schedulers; {type(scheduler).__name__} has no eta.")
    return kwargs


def noise_level(scheduler: Scheduler, t: int) -> float:
    """The noise level of timestep ``t`` as EDM's sigma (Karras et al. 2022): ``sqrt((1 - abar_t) / abar_t)`` for
    variance-preserving schedulers, ``(t / T) / (1 - t / T)`` for rectified flow (``x_t = (1 - t/T) x_0 + t/T eps``)."""
    if is_flow(scheduler):
        frac = min(float(t) / scheduler.num_train_timesteps, 1.0 - 1e-6)
        return frac / (1.0 - frac)
    abar = float(scheduler.alphas_cumprod[int(t)])
    return math.sqrt(max(1.0 - abar, 0.0) / max(abar, 1e-20))


def in_guidance_interval(scheduler: Scheduler, t: int, interval: tuple[float, float] | None) -> bool:
    """Whether CFG applies at ``t`` with ``guidance_interval=interval`` (always when ``interval`` is ``None``)."""
    if interval is None:
        return True
    lo, hi = (float(v) for v in interval)
    if not lo < hi:
        raise ValueError(f"`guidance_interval` must be (sigma_lo, sigma_hi), sigma_lo < sigma_hi; got {interval!r}.")
    return lo < noise_level(scheduler, t) <= hi


def _model_output(
    model: torch.nn.Module, x: torch.Tensor, t: int, labels: torch.Tensor | None, cfg: bool, guidance_scale: float
) -> torch.Tensor:
    """One network pass at ``t``; with ``cfg`` the conditional and null-class halves in one batch, combined."""
    x_in = torch.cat([x, x]) if cfg else x
    t_in = torch.full((x_in.shape[0],), t, dtype=torch.long, device=x.device)
    out = model(x_in, timesteps=t_in) if labels is None else model(x_in, timesteps=t_in, class_labels=labels)
    if cfg:
        out_cond, out_uncond = out.chunk(2)
        out = classifier_free_guidance(out_cond, out_uncond, guidance_scale)
    return out


def _check_timesteps(scheduler: Scheduler) -> list[int]:
    timesteps = [int(t) for t in scheduler.timesteps]
    if not timesteps:
        raise ValueError("`scheduler.timesteps` is empty: call `scheduler.set_timesteps(n)` first.")
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        if previous_timestep(scheduler, t) != t_next and not hasattr(scheduler, "final_alpha_cumprod"):  # DDPM
            raise ValueError(
                f"{type(scheduler).__name__}.step always steps t -> t-1, but `scheduler.timesteps` skips from {t} "
                f"to {t_next} (num_inference_steps={scheduler.num_inference_steps}). Use all "
                f"{scheduler.num_train_timesteps} steps with DDPM, or a DDIMScheduler for fewer steps."
            )
    return timesteps


def _sampling_device(
    model: torch.nn.Module, device: str | torch.device | None, generator: torch.Generator | None
) -> torch.device:
    """``device``, else the device of the model's parameters (CPU without any); the generator must live there."""
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"`generator` is on {generator.device} but sampling runs on {device}: create it with "
            f"torch.Generator(device={str(device)!r})."
        )
    return device


def sample(
    model: torch.nn.Module,
    scheduler: Scheduler,
    shape: Sequence[int] | None = None,
    noise: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    guidance: GuidanceStrategy | None = None,
    num_inference_steps: int | None = None,
    eta: float = 0.0,
    null_class: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    consistent_clip: bool = True,
    guidance_interval: tuple[float, float] | None = None,
    prediction_guidance: PredictionGuidance | None = None,
) -> torch.Tensor:
    """Draw samples by running the reverse diffusion chain of ``scheduler`` with ``model``.

    Implements ancestral DDPM sampling (Ho et al. 2020, Algorithm 2) or DDIM (Song et al. 2021, Eq. 12) through
    ``scheduler.step``, with classifier-free guidance (Ho & Salimans 2022, Eq. 6): when ``class_labels`` is given
    and ``guidance_scale != 1`` the conditional and the unconditional (null-class) inputs are concatenated along
    the batch and evaluated in ONE forward pass, then combined with :func:`classifier_free_guidance`.

    Args:
        model: denoiser called as ``model(x, timesteps=t, class_labels=c)`` (or without ``class_labels`` when
            unconditional); it is put in eval mode for the loop and restored afterwards.
        scheduler: MONAI ``DDPMScheduler`` / ``DDIMScheduler``; its ``prediction_type`` (epsilon, v_prediction,
            sample) is handled by its own ``step``.
        shape: sample shape ``(B, C, *spatial)``; ignored when ``noise`` is given.
        noise: initial ``x_T``; drawn from ``generator`` when ``None``.
        class_labels: ``(B,)`` integer labels in ``[0, num_classes)``; ``None`` for unconditional sampling.
        guidance_scale: CFG weight ``w``; 1 means conditional only (no extra pass), 0 unconditional.
        generator: every random draw (``x_T``, scheduler variance noise, guidance noise) comes from it; it must live
            on ``device``. The global RNG is used when ``None``.
        guidance: optional :class:`GuidanceStrategy` applied after every step.
        num_inference_steps: when given, ``scheduler.set_timesteps(num_inference_steps)`` is called first.
        eta: DDIM stochasticity (0 = deterministic DDIM); must be 0 for schedulers without ``eta``.
        null_class: the reserved unconditional label; defaults to ``num_class_embeds - 1`` of the network.
        device: where to sample; defaults to the device of the model's parameters.
        progress: show a tqdm progress bar.
        consistent_clip: when the scheduler has ``clip_sample=True``, pass the output through
            :func:`clip_model_output` first (fixes inverted classes with CFG + DDIM; no effect on DDPM).
        guidance_interval: ``(sigma_lo, sigma_hi)``: apply CFG only at steps whose noise level
            :func:`noise_level` lies in ``(sigma_lo, sigma_hi]``, and run one conditional pass elsewhere
            (Kynkaanniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and Distribution
            Quality in Diffusion Models"); ``None`` guides every step.
        prediction_guidance: optional :class:`PredictionGuidance` applied to the (CFG-combined) output before the
            consistent clip and ``scheduler.step`` (latent ILVR acts here).

    Returns:
        the final samples ``x_0`` (not clipped; the scheduler clips its ``x_0`` prediction when ``clip_sample``).

    Raises:
        ValueError: for inconsistent arguments (see messages).
    """
    if not math.isfinite(float(guidance_scale)):
        raise ValueError(f"`guidance_scale` must be a finite number, got {guidance_scale!r}.")
    device = _sampling_device(model, device, generator)
    if num_inference_steps is not None:
        scheduler.set_timesteps(int(num_inference_steps))
    timesteps = _check_timesteps(scheduler)
    step_kwargs = _step_kwargs(scheduler, eta, generator)

    x = _initial_noise(model, shape, noise, generator, device)
    use_cfg = class_labels is not None and float(guidance_scale) != 1.0
    labels_cfg = _model_labels(model, class_labels, x.shape[0], use_cfg, null_class, device)
    labels_one = labels_cfg[: x.shape[0]] if labels_cfg is not None else None
    guided = [use_cfg and in_guidance_interval(scheduler, t, guidance_interval) for t in timesteps]

    iterator = timesteps
    if progress and has_tqdm:
        iterator = tqdm(timesteps, desc="sampling", leave=False)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for t, cfg_now in zip(iterator, guided):
                out = _model_output(model, x, t, labels_cfg if cfg_now else labels_one, cfg_now, guidance_scale)
                if prediction_guidance is not None:
                    out = prediction_guidance(out, x, t, scheduler)
                if consistent_clip and getattr(scheduler, "clip_sample", False):
                    out = clip_model_output(scheduler, out, x, t)
                prev_t = previous_timestep(scheduler, t)
                if "next_timestep" in step_kwargs:  # rectified flow: the step size comes from the next timestep
                    step_kwargs["next_timestep"] = max(prev_t, 0)
                x_prev, _ = scheduler.step(out, t, x, **step_kwargs)
                if guidance is not None:
                    x_prev = guidance(x_prev, t, prev_t, scheduler, generator)
                x = x_prev
    finally:
        model.train(was_training)
    return x
