"""Multi-condition low-pass guidance (ILVR-style) as a strategy object for the shared sampling loop.

References:
    Choi et al., "ILVR: Conditioning Method for Denoising Diffusion Probabilistic Models", ICCV 2021.
    Krishna et al., "Synthesis of Realistic Medical Images with Pathologies Using Diffusion Models with
    Application to Lung CT and Mammography" (seed 001), section 2.1-2.2, Eqs. 3-5.

The sampling loop (:func:`monai_synth.inferers.sampling.sample`) calls the strategy right after each
``scheduler.step`` with ``x_prev`` (= ``x_{t-1}``), the current timestep ``t`` and the timestep ``prev_t`` that
``x_prev`` belongs to (``-1`` for ``x_0``).  Nothing is stored between calls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from monai_synth.inferers.lowpass import lowpass_filter

__all__ = [
    "ANATOMY_WEIGHTINGS",
    "Condition",
    "MultiConditionGuidance",
    "anatomy_pathology_guidance",
    "ilvr_guidance",
]

#: Weighting of the anatomy term in :func:`anatomy_pathology_guidance`: ``1 - W``, or none (Eq. 4 as written).
ANATOMY_WEIGHTINGS = ("complement", "none")

logger = logging.getLogger(__name__)

# Mixing constants for the per-step guidance generator (see MultiConditionGuidance.__call__).
_SEED_MUL = 6364136223846793005
_SEED_MOD = 2**63 - 1


@dataclass(frozen=True, eq=False)
class Condition:
    """One guidance condition of seed 001, Eq. 4 (weighted as in Eq. 5).

    Attributes:
        reference: clean reference image ``y_s`` in the model's intensity range, shape
            ``(batch, channels, *spatial)``; batch 1 is broadcast to the sample batch.
        factor: low-pass factor ``n_s`` of ``phi_{n_s}`` (larger = only coarser structure is imposed).
        last_step: ``a_s``: the condition acts at every sampling step with timestep ``t >= a_s``
            (``0`` = all steps; in training-timestep units, e.g. 0-999).
        weight: optional weight map ``W_s`` broadcastable to the sample (Eq. 5): zero where the
            condition must not act (e.g. outside a pathology patch). ``None`` means 1 everywhere.
    """

    reference: torch.Tensor
    factor: int = 4
    last_step: int = 0
    weight: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.reference, torch.Tensor) or self.reference.ndim < 3:
            raise ValueError(
                "`Condition.reference` must be a tensor of shape (batch, channels, *spatial), got "
                f"{type(self.reference).__name__} with shape {tuple(getattr(self.reference, 'shape', ()))}."
            )
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 1:
            raise ValueError(f"`Condition.factor` (n_s) must be a positive integer, got {self.factor!r}.")
        if isinstance(self.last_step, bool) or not isinstance(self.last_step, int) or self.last_step < 0:
            raise ValueError(f"`Condition.last_step` (a_s) must be a non-negative integer, got {self.last_step!r}.")
        if self.weight is not None:
            if not isinstance(self.weight, torch.Tensor) or self.weight.ndim != self.reference.ndim:
                raise ValueError(
                    "`Condition.weight` (W_s) must be a tensor with as many dims as `reference` "
                    f"({self.reference.ndim}), got shape {tuple(getattr(self.weight, 'shape', ()))}."
                )
            try:
                torch.broadcast_shapes(self.weight.shape, self.reference.shape)
            except RuntimeError as e:
                raise ValueError(
                    f"`Condition.weight` shape {tuple(self.weight.shape)} does not broadcast to `reference` "
                    f"shape {tuple(self.reference.shape)}."
                ) from e


def check_conditions(conditions: Sequence[Condition]) -> tuple[Condition, ...]:
    """``conditions`` as a tuple, checked: at least one, each a :class:`Condition`."""
    conditions = tuple(conditions)
    if not conditions:
        raise ValueError("`conditions` must hold at least one Condition.")
    for i, c in enumerate(conditions):
        if not isinstance(c, Condition):
            raise ValueError(f"`conditions[{i}]` must be a Condition, got {type(c).__name__}.")
    return conditions


def _derived_generator(generator: torch.Generator | None, prev_t: int, device: torch.device) -> torch.Generator | None:
    """A generator for the reference noise at step ``prev_t``, derived from ``generator``'s seed.

    It is built from ``generator.initial_seed()`` (which does not advance ``generator``), so the guidance
    never shifts the sampler's own random stream: the same seed gives the same sample, and a condition with
    ``W = 0`` reproduces unguided sampling exactly.
    """
    if generator is None:
        return None
    seed = (generator.initial_seed() * _SEED_MUL + (prev_t + 2) * 1442695040888963407) % _SEED_MOD
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _expand_to(name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Move ``t`` to ``x``'s device/dtype and broadcast its batch (1 or B) to ``x``'s shape."""
    t = t.to(device=x.device, dtype=x.dtype)
    if t.ndim != x.ndim or t.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"{name} shape {tuple(t.shape)} does not match the sample shape {tuple(x.shape)}: "
            "give batch 1 or the sample batch size, and the same channels and spatial size."
        )
    try:
        return t.expand(torch.broadcast_shapes(t.shape, x.shape)) if name == "weight" else t.expand(x.shape)
    except RuntimeError as e:
        raise ValueError(f"{name} shape {tuple(t.shape)} does not broadcast to sample shape {tuple(x.shape)}.") from e


class MultiConditionGuidance:
    """Multi-condition low-pass guidance (seed 001, Eqs. 3-5), a ``GuidanceStrategy`` for ``sample``.

    After each reverse step producing ``x_{t-1}`` from ``x_t``:

        ``x_{t-1} <- x_{t-1} + sum_s [t >= a_s] * W_s * (phi_{n_s}(y_{s,t-1}) - phi_{n_s}(x_{t-1}))``

    where ``y_{s,t-1}`` is reference ``y_s`` noised to step ``t-1`` by the scheduler's forward process
    (``q(y_{t-1} | y_0)``) and ``phi_n`` is :func:`~monai_synth.inferers.lowpass.lowpass_filter`.
    One condition without weight is plain ILVR (Eq. 3).  Works with any scheduler that
    :func:`~monai_synth.inferers.sampling.add_noise_to_timestep` supports (DDPM, DDIM) and with
    class-conditional models (the guidance only touches the latent).

    To let a pathology patch replace the anatomy inside the patch, give the anatomy condition the
    complementary weight ``1 - W`` (see :func:`anatomy_pathology_guidance`); with the anatomy weight at 1
    everywhere Eq. 4 sums both corrections and the patch region settles on a blend of the two references.

    Args:
        conditions: the conditions ``(y_s, n_s, a_s, W_s)``, at least one.

    Raises:
        ValueError: when ``conditions`` is empty or holds something other than :class:`Condition`.
    """

    def __init__(self, conditions: Sequence[Condition]) -> None:
        self.conditions = check_conditions(conditions)

    def __call__(
        self,
        x_prev: torch.Tensor,
        t: int,
        prev_t: int,
        scheduler,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Apply Eq. 4 to ``x_prev`` (= ``x_{t-1}``) after the reverse step from timestep ``t``.

        Args:
            x_prev: the latent after ``scheduler.step``, shape ``(batch, channels, *spatial)``.
            t: the timestep of the step just taken.
            prev_t: the timestep ``x_prev`` belongs to (``< 0`` for the final ``x_0``).
            scheduler: the scheduler used for sampling (its forward process noises the references).
            generator: the sampler's generator; the reference noise comes from a generator derived from its
                seed and ``prev_t`` (so the sampler's own stream is not shifted). ``None`` uses the global RNG.

        Returns:
            The guided ``x_{t-1}``.
        """
        from monai_synth.inferers.sampling import add_noise_to_timestep

        t, prev_t = int(t), int(prev_t)
        active = [c for c in self.conditions if t >= c.last_step]  # seed 001, Eq. 4: "if t >= a_s"
        if not active:
            return x_prev
        g = _derived_generator(generator, prev_t, x_prev.device)
        phi_x: dict[int, torch.Tensor] = {}  # phi_{n}(x_{t-1}) for each distinct n, all from the same x_{t-1}
        correction = torch.zeros_like(x_prev)
        for c in active:
            y_s = _expand_to("reference", c.reference, x_prev)
            # y_{s,t-1} ~ q(y_{t-1} | y_s): the reference noised to the timestep of x_{t-1} (x_0 stays clean).
            y_s_prev = add_noise_to_timestep(scheduler, y_s, prev_t, g)
            if c.factor not in phi_x:
                phi_x[c.factor] = lowpass_filter(x_prev, c.factor)
            # seed 001, Eq. 3/4: phi_{n_s}(y_{s,t-1}) - phi_{n_s}(x_{t-1})
            delta = lowpass_filter(y_s_prev, c.factor) - phi_x[c.factor]
            if c.weight is not None:
                delta = _expand_to("weight", c.weight, x_prev) * delta  # seed 001, Eq. 5: (...) * W
            correction = correction + delta
        return x_prev + correction

    def __repr__(self) -> str:
        parts = ", ".join(
            f"(n={c.factor}, a={c.last_step}, weighted={c.weight is not None})" for c in self.conditions
        )
        return f"{type(self).__name__}([{parts}])"


def ilvr_guidance(reference: torch.Tensor, factor: int = 4, last_step: int = 0) -> MultiConditionGuidance:
    """Single-reference ILVR (Choi et al. 2021; seed 001, Eq. 3) as a one-condition strategy.

    Args:
        reference: clean reference ``y``, shape ``(batch, channels, *spatial)``.
        factor: low-pass factor ``N``.
        last_step: conditioning acts for timesteps ``t >= last_step`` (ILVR's range ``(T, a)``).
    """
    return MultiConditionGuidance([Condition(reference=reference, factor=factor, last_step=last_step)])


def anatomy_pathology_guidance(
    anatomy: torch.Tensor,
    pathology: torch.Tensor,
    weight: torch.Tensor,
    anatomy_factor: int = 4,
    pathology_factor: int = 2,
    anatomy_last_step: int = 0,
    pathology_last_step: int = 0,
    anatomy_weighting: str = "complement",
) -> MultiConditionGuidance:
    """Two-condition guidance of seed 001, Eqs. 4-5: anatomy everywhere, pathology inside its patch.

    The pathology condition gets ``W`` (zero outside the patch, Gaussian inside, e.g. from
    ``PatchWeightMap``, Eq. 5). With ``anatomy_weighting="complement"`` the anatomy condition gets ``1 - W``, so
    the low frequencies of the sample follow ``(1 - W) * phi(anatomy) + W * phi(pathology)``. With ``"none"`` the
    anatomy term is unweighted, as Eq. 4 writes it: both corrections are summed, and where both conditions act
    with one factor the low frequencies settle at ``(phi(anatomy) + W phi(pathology)) / (1 + W)``.

    Args:
        anatomy: anatomy reference ``y_1`` (full image).
        pathology: pathology reference ``y_2``: a full-size image holding the pathology patch where it
            should appear (e.g. from ``place_patch``).
        weight: ``W`` in ``[0, 1]``, broadcastable to the sample.
        anatomy_factor: ``n_1``.
        pathology_factor: ``n_2`` (usually smaller than ``n_1``: the lesion needs finer detail).
        anatomy_last_step: ``a_1``.
        pathology_last_step: ``a_2``.
        anatomy_weighting: ``"complement"`` (``1 - W``) or ``"none"`` (Eq. 4 as written).

    Raises:
        ValueError: when ``weight`` has values outside ``[0, 1]`` or ``anatomy_weighting`` is unknown.
    """
    if anatomy_weighting not in ANATOMY_WEIGHTINGS:
        raise ValueError(f"`anatomy_weighting` must be one of {list(ANATOMY_WEIGHTINGS)}, got {anatomy_weighting!r}.")
    if weight.numel() and (float(weight.min()) < 0.0 or float(weight.max()) > 1.0):
        raise ValueError(
            f"`weight` (W) must lie in [0, 1], got range [{float(weight.min()):.3g}, {float(weight.max()):.3g}]."
        )
    return MultiConditionGuidance(
        [
            Condition(
                reference=anatomy,
                factor=anatomy_factor,
                last_step=anatomy_last_step,
                weight=1.0 - weight if anatomy_weighting == "complement" else None,
            ),
            Condition(reference=pathology, factor=pathology_factor, last_step=pathology_last_step, weight=weight),
        ]
    )
