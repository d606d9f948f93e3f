"""Class-conditional latent diffusion with CFG, and ILVR low-pass guidance enforced at image resolution.

:class:`ClassConditionedLatentDiffusionInferer` extends MONAI's ``LatentDiffusionInferer`` the way
:class:`~monai_synth.inferers.ClassConditionedDiffusionInferer` extends ``DiffusionInferer``: training encodes the
images with the autoencoder (``scale_factor * z``, Rombach et al. 2022, Sec. 3.2) and conditions the UNet on class
labels with CFG label dropout; sampling runs the one loop :func:`~monai_synth.inferers.sample` (every scheduler,
CFG, interval guidance) in latent space and decodes in batches.

:class:`LatentLowPassGuidance` is seed 001's multi-condition guidance (Eqs. 3-5) for latent models. Low-pass
filtering a latent is not low-pass filtering the image, so the condition is applied where it is defined: at each
step the predicted clean latent ``z_0`` is decoded, its low frequencies are replaced at image resolution,

    ``x' = D(z_0) + sum_s W_s * (phi_{n_s}(y_s) - phi_{n_s}(D(z_0)))``,

and the latent moves by the encoder's response to that change, ``z_0' = z_0 + s * (E(x') - E(D(z_0)))``; the network
output is then rewritten so that it implies ``z_0'`` at the same ``z_t`` (:func:`~monai_synth.inferers.output_from_x0`)
and the scheduler steps from it. The references are clean (the correction acts on the clean prediction, as in
the "x_0-space" variants of ILVR-style guidance); the difference form keeps the parts of ``z_0`` that the
encode-decode round trip would lose.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import LatentDiffusionInferer
from monai.networks.schedulers import Scheduler

from monai_synth.inferers.class_conditioned import ClassConditionedDiffusionInferer
from monai_synth.inferers.guidance import Condition, _expand_to, check_conditions
from monai_synth.inferers.lowpass import lowpass_filter
from monai_synth.inferers.sampling import GuidanceStrategy, output_from_x0, predicted_x0, sample
from monai_synth.networks.autoencoder import decode_latents

__all__ = ["ClassConditionedLatentDiffusionInferer", "LatentLowPassGuidance"]


class ClassConditionedLatentDiffusionInferer(LatentDiffusionInferer):
    """``LatentDiffusionInferer`` with class labels and classifier-free guidance.

    Args:
        scheduler: MONAI noise scheduler (in latent space; ``clip_sample=False``: latents are not in [-1, 1]).
        scale_factor: ``s`` of ``z = s * E(x)`` (``1 / std`` of the training latents, see
            :func:`monai_synth.engines.latent_scale_factor`).
        num_classes: real classes (the null class is ``num_classes``); ``None``: unconditional.
        cond_drop_prob: CFG label dropout in training mode.
        generator: optional generator of the dropout draw.
        decode_batch_size: latents decoded per autoencoder pass when sampling.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        scale_factor: float = 1.0,
        num_classes: int | None = None,
        cond_drop_prob: float = 0.1,
        generator: torch.Generator | None = None,
        decode_batch_size: int = 32,
    ) -> None:
        super().__init__(scheduler=scheduler, scale_factor=float(scale_factor))
        self.conditioned = ClassConditionedDiffusionInferer(scheduler, num_classes, cond_drop_prob, generator)
        self.num_classes = self.conditioned.num_classes
        if int(decode_batch_size) < 1:
            raise ValueError(f"`decode_batch_size` must be >= 1, got {decode_batch_size!r}.")
        self.decode_batch_size = int(decode_batch_size)

    def encode(self, inputs: torch.Tensor, autoencoder_model: torch.nn.Module) -> torch.Tensor:
        """``scale_factor * mu(x)`` (no gradient into the autoencoder, which is trained first)."""
        with torch.no_grad():
            z_mu, _ = autoencoder_model.encode(inputs)
        return z_mu * self.scale_factor

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        autoencoder_model: torch.nn.Module,
        diffusion_model: torch.nn.Module,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training pass on images: encode, then :class:`ClassConditionedDiffusionInferer` on the latents.

        Args:
            inputs: images in [-1, 1].
            autoencoder_model: the trained ``AutoencoderKL``.
            diffusion_model: the latent denoiser.
            noise: latent-shaped Gaussian noise.
            timesteps: ``(B,)`` training timesteps.
            class_labels: ``(B,)`` labels in ``[0, num_classes]``.
            condition: optional cross-attention context.
        """
        latents = self.encode(inputs, autoencoder_model)
        if noise.shape != latents.shape:
            raise ValueError(f"`noise` has shape {tuple(noise.shape)} but the latents are {tuple(latents.shape)}.")
        return self.conditioned(latents, diffusion_model, noise, timesteps, class_labels, condition)

    def sample(  # type: ignore[override]
        self,
        input_noise: torch.Tensor,
        autoencoder_model: torch.nn.Module,
        diffusion_model: torch.nn.Module,
        scheduler: Scheduler | None = None,
        class_labels: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        guidance: GuidanceStrategy | None = None,
        eta: float = 0.0,
        guidance_interval: tuple[float, float] | None = None,
        lowpass_guidance: LatentLowPassGuidance | None = None,
        verbose: bool = False,
    ) -> torch.Tensor:
        """Sample latents with :func:`~monai_synth.inferers.sample` from ``input_noise`` and decode them.

        Returns:
            decoded images (the autoencoder's range, [-1, 1] in ``monai_synth``).
        """
        latents = sample(
            diffusion_model,
            scheduler if scheduler is not None else self.scheduler,
            noise=input_noise,
            class_labels=class_labels,
            guidance_scale=guidance_scale,
            generator=generator,
            guidance=guidance,
            eta=eta,
            null_class=self.num_classes,
            progress=verbose,
            guidance_interval=guidance_interval,
            prediction_guidance=lowpass_guidance,
        )
        return decode_latents(autoencoder_model, latents, self.scale_factor, self.decode_batch_size)


class LatentLowPassGuidance:
    """Seed 001's multi-condition low-pass guidance (Eqs. 3-5) for a latent model, applied at image resolution.

    A :class:`~monai_synth.inferers.PredictionGuidance` for :func:`~monai_synth.inferers.sample` (see the module
    docstring for the update). Conditions are the pixel-space :class:`~monai_synth.inferers.Condition` objects
    (reference images in [-1, 1] at the decoded size, factor ``n_s``, ``last_step`` ``a_s``, weight ``W_s``).

    Args:
        autoencoder: the trained ``AutoencoderKL``.
        scale_factor: the latent scale ``s``.
        conditions: at least one condition.
        iterations: decode-correct-encode rounds per step (the correction is re-measured on the new decoding).
    """

    def __init__(
        self,
        autoencoder: torch.nn.Module,
        scale_factor: float,
        conditions: Sequence[Condition],
        iterations: int = 2,
    ) -> None:
        if int(iterations) < 1:
            raise ValueError(f"`iterations` must be >= 1, got {iterations!r}.")
        self.iterations = int(iterations)
        self.autoencoder, self.scale_factor = autoencoder, float(scale_factor)
        self.conditions = check_conditions(conditions)

    def correction(self, image: torch.Tensor, t: int) -> torch.Tensor | None:
        """``sum_s [t >= a_s] W_s (phi_{n_s}(y_s) - phi_{n_s}(image))``, ``None`` when no condition is active."""
        active = [c for c in self.conditions if int(t) >= c.last_step]
        if not active:
            return None
        total = torch.zeros_like(image)
        for c in active:
            delta = lowpass_filter(_expand_to("reference", c.reference, image), c.factor) - lowpass_filter(
                image, c.factor
            )
            if c.weight is not None:
                delta = _expand_to("weight", c.weight, image) * delta
            total = total + delta
        return total

    def __call__(self, model_output: torch.Tensor, x_t: torch.Tensor, t: int, scheduler: Scheduler) -> torch.Tensor:
        z0 = predicted_x0(scheduler, model_output, x_t, t)
        changed = False
        for _ in range(self.iterations):  # the encoder is only an approximate inverse of the decoder: repeat
            image = self.autoencoder.decode_stage_2_outputs(z0 / self.scale_factor)
            delta = self.correction(image, t)
            if delta is None:
                break
            z_mu_new, _ = self.autoencoder.encode(image + delta)
            z_mu_old, _ = self.autoencoder.encode(image)
            z0 = z0 + self.scale_factor * (z_mu_new - z_mu_old)
            changed = True
        return output_from_x0(scheduler, z0, x_t, t) if changed else model_output

    def __repr__(self) -> str:
        parts = ", ".join(f"(n={c.factor}, a={c.last_step}, weighted={c.weight is not None})" for c in self.conditions)
        return f"{type(self).__name__}([{parts}])"
