"""Class-label conditioning for MONAI's ``DiffusionInferer`` with classifier-free guidance.

MONAI's ``DiffusionInferer`` never passes ``class_labels`` to ``DiffusionModelUNet(num_class_embeds=...)``. This
inferer does, drops labels to a reserved null class during training (Ho & Salimans 2022, "Classifier-Free
Diffusion Guidance", Algorithm 1) and samples through :func:`monai_synth.inferers.sampling.sample`.

Label convention: real classes are ``0 .. num_classes - 1``; the null (unconditional) class is ``num_classes``, so
the network is built with ``num_class_embeds = num_classes + 1``.
"""

from __future__ import annotations

import torch
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import Scheduler

from monai_synth.inferers.sampling import GuidanceStrategy, sample

__all__ = ["ClassConditionedDiffusionInferer", "drop_class_labels"]


def drop_class_labels(
    class_labels: torch.Tensor, null_class: int, drop_prob: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace each label by ``null_class`` independently with probability ``drop_prob`` (Ho & Salimans 2022, Alg. 1).

    The Bernoulli draw is ``torch.rand(B, generator=generator) < drop_prob`` on the generator's device (the labels'
    device when ``generator`` is ``None``), so a test can reproduce it exactly.

    Args:
        class_labels: ``(B,)`` integer labels.
        null_class: the reserved unconditional index.
        drop_prob: probability in ``[0, 1]``.
        generator: source of the Bernoulli draw; the global RNG when ``None``.

    Returns:
        a new label tensor (the input is not modified).
    """
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"`cond_drop_prob` must be in [0, 1], got {drop_prob!r}.")
    if drop_prob == 0.0:
        return class_labels.clone()
    draw_device = generator.device if generator is not None else class_labels.device
    drop = torch.rand(class_labels.shape, generator=generator, device=draw_device) < drop_prob
    drop = drop.to(class_labels.device)
    return torch.where(drop, torch.full_like(class_labels, null_class), class_labels)


class ClassConditionedDiffusionInferer(DiffusionInferer):
    """``DiffusionInferer`` that conditions ``DiffusionModelUNet`` on class labels, with CFG label dropout.

    Args:
        scheduler: MONAI noise scheduler (forward process for training, reverse steps for sampling).
        num_classes: number of real classes; ``None`` for an unconditional model (``class_labels`` must be ``None``).
        cond_drop_prob: probability of replacing a label by the null class while the network is in training mode
            (Ho & Salimans use 0.1-0.2).
        generator: optional generator for the dropout draw (module RNG when ``None``).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        num_classes: int | None = None,
        cond_drop_prob: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(scheduler=scheduler)
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be a positive integer or None, got {num_classes!r}.")
        if not 0.0 <= float(cond_drop_prob) <= 1.0:
            raise ValueError(f"`cond_drop_prob` must be in [0, 1], got {cond_drop_prob!r}.")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.cond_drop_prob = float(cond_drop_prob)
        self.generator = generator

    @property
    def null_class(self) -> int | None:
        """Index of the unconditional class (``num_classes``), ``None`` for an unconditional model."""
        return self.num_classes

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: torch.nn.Module,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training forward pass: ``model(q_sample(x_0, t, noise), t, class_labels=c')``.

        ``c'`` is ``class_labels`` with a ``cond_drop_prob`` fraction replaced by the null class when
        ``diffusion_model.training`` is true (no dropout in eval mode, e.g. for validation losses).

        Args:
            inputs: clean images ``x_0`` in the model's intensity range ([-1, 1] in ``monai_synth``).
            diffusion_model: the denoiser.
            noise: Gaussian noise, same shape as ``inputs``.
            timesteps: ``(B,)`` training timesteps.
            class_labels: ``(B,)`` integer labels in ``[0, num_classes]`` (``num_classes`` = already dropped).
            condition: optional cross-attention context, passed through as MONAI's ``context``.

        Returns:
            the network prediction (noise, velocity or sample according to the scheduler's ``prediction_type``).
        """
        noisy = self.scheduler.add_noise(original_samples=inputs, noise=noise, timesteps=timesteps)
        kwargs: dict = {"timesteps": timesteps}
        if condition is not None:
            kwargs["context"] = condition
        if class_labels is not None:
            if self.num_classes is None:
                raise ValueError(
                    "`class_labels` were given but the inferer was built with num_classes=None: set `num_classes`."
                )
            class_labels = class_labels.long().reshape(-1)
            lo, hi = int(class_labels.min()), int(class_labels.max())
            if lo < 0 or hi > self.num_classes:
                raise ValueError(
                    f"`class_labels` must lie in [0, {self.num_classes}] (num_classes={self.num_classes}, "
                    f"null class={self.num_classes}), got values in [{lo}, {hi}]."
                )
            if diffusion_model.training and self.cond_drop_prob > 0:
                class_labels = drop_class_labels(class_labels, self.num_classes, self.cond_drop_prob, self.generator)
            kwargs["class_labels"] = class_labels
        return diffusion_model(noisy, **kwargs)

    def sample(  # type: ignore[override]
        self,
        input_noise: torch.Tensor,
        diffusion_model: torch.nn.Module,
        scheduler: Scheduler | None = None,
        class_labels: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        guidance: GuidanceStrategy | None = None,
        eta: float = 0.0,
        verbose: bool = False,
    ) -> torch.Tensor:
        """Sample with :func:`monai_synth.inferers.sampling.sample` (CFG over the null class ``num_classes``)."""
        return sample(
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
        )
