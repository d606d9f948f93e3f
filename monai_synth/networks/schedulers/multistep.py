"""Multistep solvers for diffusion sampling on MONAI's ``Scheduler`` API: DPM-Solver++ and UniPC (ODE), and
SDE-DPM-Solver++ (the reverse SDE, :class:`SDEDPMSolverMultistepScheduler`).

Both integrate the probability-flow ODE of a variance-preserving diffusion in its data-prediction form. With
``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``, ``lambda_t = log(alpha_t / sigma_t)`` and the model's
data prediction ``D_t`` (``x_0`` implied by the epsilon or v output), one step from ``s`` to ``t`` is

    ``x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D_s + (higher-order terms)``,  ``h = lambda_t - lambda_s``

(Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models", Eq. 9 and
Algorithm 2 for the second-order multistep update; the third-order multistep update follows the same construction
with a second divided difference). UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast
Sampling of Diffusion Models", Algorithms 1-2, ``B(h) = e^{-h} - 1``, "bh2") adds a corrector that reuses the model
evaluation at the new point, so it costs no extra network pass.

The same updates solve the ODE of a rectified-flow model (Liu et al. 2023; MONAI's ``RFlowScheduler``,
``prediction_type="flow"``): its path ``x_t = (1 - t/T) x_0 + (t/T) eps`` is a Gaussian path with ``alpha_t = 1 - t/T``
and ``sigma_t = t/T``, and its velocity output ``v = x_0 - eps`` implies ``D_t = x_t + sigma_t v``. The first-order
update is then exactly the flow's Euler step ``x_t = x_s + (sigma_s - sigma_t) v`` (MONAI's ``RFlowScheduler.step``);
the higher orders add the same divided-difference terms as for a variance-preserving model (Lu et al. 2022 derive
them for any ``alpha_t``, ``sigma_t``).

Contract (the one sampling loop, :func:`monai_synth.inferers.sample`): ``set_timesteps(n)`` sets ``n`` decreasing
training timesteps from ``T - 1`` (one network evaluation each); ``step(model_output, t, x)`` returns
``(x_prev, x0_pred)`` where ``x_prev`` belongs to :meth:`previous_timestep` ``(t)`` (``-1`` after the last step: the
clean sample). The solvers keep the data predictions of the previous steps; the history restarts whenever ``step``
is called at the first timestep. The last step (to noise level 0) is first order: it returns ``D_t`` itself.
"""

from __future__ import annotations

import math

import torch
from monai.networks.schedulers import Scheduler

__all__ = ["DPMSolverMultistepScheduler", "SDEDPMSolverMultistepScheduler", "UniPCMultistepScheduler"]


class _MultistepSolver(Scheduler):
    """Shared schedule, timesteps, data prediction and history of the multistep solvers.

    Args:
        num_train_timesteps: T of the trained model.
        schedule: MONAI noise schedule name (``"cosine"``, ``"linear_beta"``, ...).
        prediction_type: what the network predicts: ``"epsilon"`` or ``"v_prediction"`` (variance-preserving path on
            the ``schedule``), or ``"flow"`` (the rectified-flow velocity ``x_0 - eps`` on the linear path
            ``alpha_t = 1 - t/T``, ``sigma_t = t/T``; ``schedule`` is then unused).
        solver_order: 1, 2 or 3 (multistep order; the first steps use lower orders while the history fills).
        clip_sample: clip the data prediction to ``clip_sample_values`` (as MONAI's DDIM clips ``x_0``).
        clip_sample_values: the clipping range.
        timestep_shift: ``s`` of the timestep grid: the uniform grid ``u`` in ``[0, 1]`` becomes
            ``s u / (1 + (s - 1) u)`` (Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution
            Image Synthesis", Eq. 23, the resolution-dependent shift). ``s < 1`` spends more of the steps at low noise
            (small images), ``s > 1`` at high noise (large images); 1 keeps the uniform grid.
        schedule_args: passed to the schedule function (e.g. ``beta_start``, ``beta_end``).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        prediction_type: str = "epsilon",
        solver_order: int = 2,
        clip_sample: bool = True,
        clip_sample_values: tuple[float, float] = (-1.0, 1.0),
        timestep_shift: float = 1.0,
        **schedule_args,
    ) -> None:
        super().__init__(num_train_timesteps, schedule, **schedule_args)
        if not (isinstance(timestep_shift, (int, float)) and math.isfinite(timestep_shift) and timestep_shift > 0):
            raise ValueError(f"`timestep_shift` must be a finite number > 0, got {timestep_shift!r}.")
        self.timestep_shift = float(timestep_shift)
        if prediction_type not in ("epsilon", "v_prediction", "flow"):
            raise ValueError(
                f"`prediction_type` must be 'epsilon', 'v_prediction' or 'flow', got {prediction_type!r}."
            )
        if int(solver_order) not in (1, 2, 3):
            raise ValueError(f"`solver_order` must be 1, 2 or 3, got {solver_order!r}.")
        self.prediction_type = prediction_type
        self.solver_order = int(solver_order)
        self.clip_sample = bool(clip_sample)
        self.clip_sample_values = tuple(float(v) for v in clip_sample_values)
        self._history: list[tuple[int, torch.Tensor]] = []  # (timestep, data prediction), oldest first

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """``num_inference_steps`` timesteps ``round(linspace(T - 1, 0, n + 1))[:-1]``, decreasing; with a
        ``timestep_shift`` ``s != 1``, ``round((T - 1) s u / (1 + (s - 1) u))`` for ``u = linspace(1, 0, n + 1)``.

        Raises:
            ValueError: when ``num_inference_steps`` is not in ``[1, T]``, or when the shifted grid rounds two steps to
                the same timestep (too many steps for this shift).
        """
        n = int(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise ValueError(f"`num_inference_steps` must be in [1, {self.num_train_timesteps}], got {n}.")
        if self.timestep_shift == 1.0:
            grid = torch.linspace(self.num_train_timesteps - 1, 0, n + 1).round().long()[:-1]
        else:
            s, u = self.timestep_shift, torch.linspace(1, 0, n + 1, dtype=torch.float64)
            grid = ((self.num_train_timesteps - 1) * s * u / (1 + (s - 1) * u)).round().long()[:-1]
            if n > 1 and not bool((grid[:-1] > grid[1:]).all()):
                raise ValueError(
                    f"{n} steps with `timestep_shift` {s} put two steps on the same training timestep: use fewer "
                    "steps or a shift closer to 1."
                )
        self.num_inference_steps = n
        self.timesteps = grid.to(device) if device is not None else grid
        self._history = []

    def previous_timestep(self, timestep: int) -> int:
        """The timestep that ``step(..., timestep, ...)`` returns a sample for; ``-1`` means the clean sample."""
        steps = [int(t) for t in self.timesteps]
        i = steps.index(int(timestep))
        return steps[i + 1] if i + 1 < len(steps) else -1

    def _alpha_sigma(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t, lambda_t)`` at a training timestep (``t < 0``: 1, 0, +inf)."""
        if t < 0:
            one = torch.ones((), dtype=torch.float64)
            return one, torch.zeros((), dtype=torch.float64), torch.tensor(math.inf, dtype=torch.float64)
        if self.prediction_type == "flow":
            sigma = torch.tensor(int(t) / self.num_train_timesteps, dtype=torch.float64)
            alpha = 1 - sigma
        else:
            abar = self.alphas_cumprod[int(t)].to(torch.float64)
            alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        return alpha, sigma, torch.log(alpha) - torch.log(sigma)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x_t = alpha_t x_0 + sigma_t eps`` at each sample's timestep (the forward process the solver integrates:
        MONAI's variance-preserving ``add_noise``, or the rectified-flow path for ``prediction_type="flow"``)."""
        if self.prediction_type != "flow":
            return super().add_noise(original_samples, noise, timesteps)
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        sigma = (timesteps.to(original_samples.device).float() / self.num_train_timesteps).reshape(shape)
        return ((1 - sigma) * original_samples + sigma * noise).to(original_samples.dtype)

    def data_prediction(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor) -> torch.Tensor:
        """``x_0`` implied by the network output (epsilon: Ho et al. 2020 Eq. 15; v: Salimans & Ho 2022; flow:
        ``x_t + sigma_t v``)."""
        alpha, sigma, _ = self._alpha_sigma(int(timestep))
        alpha, sigma = alpha.to(sample.dtype).to(sample.device), sigma.to(sample.dtype).to(sample.device)
        if self.prediction_type == "epsilon":
            x0 = (sample - sigma * model_output) / alpha
        elif self.prediction_type == "flow":
            x0 = sample + sigma * model_output
        else:
            x0 = alpha * sample - sigma * model_output
        if self.clip_sample:
            x0 = x0.clamp(*self.clip_sample_values)
        return x0

    def _record(self, timestep: int, x0: torch.Tensor) -> None:
        if int(timestep) == int(self.timesteps[0]):  # a new sampling chain starts
            self._history = []
        self._history.append((int(timestep), x0))
        self._history = self._history[-3:]

    def _order(self, timestep: int) -> int:
        """The order of this step: limited by the history; first order for the final step to noise level 0."""
        if self.previous_timestep(timestep) < 0:
            return 1
        return min(self.solver_order, len(self._history))

    def _remaining(self, timestep: int) -> int:
        """Steps left including this one."""
        return len(self.timesteps) - [int(t) for t in self.timesteps].index(int(timestep))

    def _check(self, timestep: int) -> None:
        if self.num_inference_steps is None:
            raise ValueError(f"{type(self).__name__}: call `set_timesteps(n)` before `step`.")
        if int(timestep) not in [int(t) for t in self.timesteps]:
            raise ValueError(f"{type(self).__name__}: timestep {timestep} is not in `timesteps`.")


class DPMSolverMultistepScheduler(_MultistepSolver):
    """DPM-Solver++ multistep (Lu et al. 2022, Algorithm 2; order 3 by the same divided differences).

    The authors recommend order 2 for guided (CFG) sampling and order 3 for unguided sampling. See
    :class:`_MultistepSolver` for the arguments.
    """

    def _order(self, timestep: int) -> int:
        """As the base class; a third-order solver also steps at second order at the penultimate step of chains
        shorter than 15 steps (lower-order final steps stabilise few-step sampling, Lu et al. 2022, Sec. 5)."""
        order = super()._order(timestep)
        if len(self.timesteps) < 15 and self._remaining(timestep) == 2:
            order = min(order, 2)
        return order

    def step(
        self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One multistep update from ``timestep`` to :meth:`previous_timestep`; returns ``(x_prev, x0_pred)``."""
        self._check(timestep)
        x0 = self.data_prediction(model_output, timestep, sample)
        self._record(timestep, x0)
        t = self.previous_timestep(timestep)
        order = self._order(timestep)
        if t < 0:
            return x0, x0
        alpha_t, sigma_t, lam_t = self._alpha_sigma(t)
        lams = [self._alpha_sigma(s)[2] for s, _ in self._history]
        _, sigma_s, _ = self._alpha_sigma(int(timestep))
        h = lam_t - lams[-1]
        phi = torch.expm1(-h)  # e^{-h} - 1
        m0 = self._history[-1][1]
        x = (sigma_t / sigma_s).item() * sample - (alpha_t * phi).item() * m0
        if order >= 2:
            m1 = self._history[-2][1]
            r0 = (lams[-1] - lams[-2]) / h
            d1_0 = (m0 - m1) / r0.item()
            if order == 2:
                x = x - (0.5 * alpha_t * phi).item() * d1_0
            else:
                m2 = self._history[-3][1]
                r1 = (lams[-2] - lams[-3]) / h
                d1_1 = (m1 - m2) / r1.item()
                d1 = d1_0 + (r0 / (r0 + r1)).item() * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1).item()
                x = x + (alpha_t * (phi / h + 1.0)).item() * d1 - (alpha_t * ((phi + h) / h**2 - 0.5)).item() * d2
        return x.to(sample.dtype), x0


class SDEDPMSolverMultistepScheduler(DPMSolverMultistepScheduler):
    """SDE-DPM-Solver++ multistep, orders 1 and 2 (Lu et al. 2022, the stochastic solver of the DPM-Solver++ paper;
    diffusers' ``algorithm_type="sde-dpmsolver++"`` with the midpoint second-order term).

    It integrates the reverse diffusion SDE instead of the probability-flow ODE. One step from ``s`` to ``t``, with
    ``h = lambda_t - lambda_s``, the data predictions ``D`` and ``z ~ N(0, I)`` drawn from the loop's generator:

        ``x_t = (sigma_t / sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) (D_s + D1 / 2)
        + sigma_t sqrt(1 - e^{-2h}) z``,

    where ``D1 = (D_s - D_{s'}) / r`` (``r = (lambda_s - lambda_{s'}) / h``) at second order and 0 at first order.
    The first-order step is DDIM with ``eta = 1`` (Song et al. 2021, Eq. 12: its noise variance
    ``sigma_t^2 / sigma_s^2 (1 - alpha_s^2 / alpha_t^2)`` equals ``sigma_t^2 (1 - e^{-2h})``), so the solver keeps
    the stochastic sampler's robustness to an imperfect score while its second-order term allows fewer steps. The
    final step (to noise level 0) returns ``D_t``.

    ``eta`` in ``[0, 1]`` scales the stochasticity: with ``g = eta h`` the step is

        ``x_t = (sigma_t / sigma_s) e^{-g} x_s + alpha_t (1 - e^{-h - g}) (D_s + D1 / 2)
        + sigma_t sqrt(1 - e^{-2g}) z``,

    the update above at ``eta = 1`` and DPM-Solver++ 2M's deterministic step at ``eta = 0`` (the parameterisation of
    k-diffusion's ``sample_dpmpp_2m_sde``). With the exact score every ``eta`` samples the data distribution (tested
    on Gaussian data); smaller values re-noise less and follow the ODE's paths more closely.
    See :class:`_MultistepSolver` for the other arguments.

    Args:
        eta: stochasticity, 1 (default): the reverse SDE; 0: the probability-flow ODE.
    """

    def __init__(self, *args, eta: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.solver_order > 2:
            raise ValueError(f"SDE-DPM-Solver++ has orders 1 and 2 here, got `solver_order`={self.solver_order}.")
        if not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
            raise ValueError(f"SDE-DPM-Solver++ `eta` must be a number in [0, 1], got {eta!r}.")
        self.eta = float(eta)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One stochastic multistep update to :meth:`previous_timestep`; returns ``(x_prev, x0_pred)``.

        The noise is drawn from ``generator`` (the global RNG when ``None``) at every step, the last included, so a
        chain's random stream does not depend on where it ends.
        """
        self._check(timestep)
        x0 = self.data_prediction(model_output, timestep, sample)
        self._record(timestep, x0)
        noise = torch.randn(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        t = self.previous_timestep(timestep)
        if t < 0:
            return x0, x0
        alpha_t, sigma_t, lam_t = self._alpha_sigma(t)
        _, sigma_s, lam_s = self._alpha_sigma(int(timestep))
        h = lam_t - lam_s
        g = self.eta * h
        drift = self._history[-1][1]
        if self._order(timestep) == 2:
            (s1, m1), m0 = self._history[-2], self._history[-1][1]
            r0 = (lam_s - self._alpha_sigma(s1)[2]) / h
            drift = m0 + (0.5 / r0.item()) * (m0 - m1)
        x = (
            (sigma_t / sigma_s * torch.exp(-g)).item() * sample
            - (alpha_t * torch.expm1(-h - g)).item() * drift  # alpha_t (1 - e^{-h-g})
            + (sigma_t * (-torch.expm1(-2.0 * g)).sqrt()).item() * noise  # sigma_t sqrt(1 - e^{-2g})
        )
        return x.to(sample.dtype), x0


class UniPCMultistepScheduler(_MultistepSolver):
    """UniPC (Zhao et al. 2023): the UniP-p predictor with the UniC corrector, ``B(h) = e^{-h} - 1`` ("bh2").

    The corrector refines the sample that the previous predictor produced, using the network output at that sample,
    which the loop computes anyway: order ``p`` predictor + corrector at no extra network pass. The corrector is off
    for the final step (to noise level 0). See :class:`_MultistepSolver` for the other arguments.

    Args:
        use_corrector: apply UniC (False gives the plain UniP predictor).
    """

    def __init__(self, *args, use_corrector: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.use_corrector = bool(use_corrector)
        self._last: tuple[int, torch.Tensor, int] | None = None  # (timestep, sample before the predictor, order)

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """See :meth:`_MultistepSolver.set_timesteps`; also forgets the corrector's state."""
        super().set_timesteps(num_inference_steps, device)
        self._last = None

    def _order(self, timestep: int) -> int:
        """As the base class, and never above the number of steps left (lower-order final steps)."""
        return min(super()._order(timestep), self._remaining(timestep))

    def _coefficients(self, h: torch.Tensor, rks: list[torch.Tensor], order: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``R`` (Vandermonde in ``r_k``) and ``b`` of UniPC's linear system (Zhao et al. 2023, Eq. 8, bh2)."""
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = torch.expm1(hh)
        r = torch.stack([*rks, torch.ones((), dtype=torch.float64)])
        rows, b, factorial = [], [], 1
        for i in range(1, order + 1):
            rows.append(r ** (i - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        return torch.stack(rows), torch.stack(b)

    def _update(
        self, sample: torch.Tensor, s0: int, t: int, order: int, history: list, model_t: torch.Tensor | None
    ) -> torch.Tensor:
        """UniP (``model_t is None``) or UniC step from ``s0`` to ``t`` with the data predictions ``history``."""
        alpha_t, sigma_t, lam_t = self._alpha_sigma(t)
        _, sigma_s, lam_s = self._alpha_sigma(s0)
        h = lam_t - lam_s
        m0 = history[-1][1]
        rks, d1s = [], []
        for i in range(1, order):
            si, mi = history[-(i + 1)]
            rk = (self._alpha_sigma(si)[2] - lam_s) / h
            rks.append(rk)
            d1s.append((mi - m0) / rk.item())
        R, b = self._coefficients(h, rks, order)
        b_h = torch.expm1(-h)
        x = (sigma_t / sigma_s).item() * sample - (alpha_t * b_h).item() * m0
        if model_t is None:  # predictor
            if not d1s:
                return x
            rhos = torch.tensor([0.5], dtype=torch.float64) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
            res = sum(rho.item() * d for rho, d in zip(rhos, d1s))
        else:  # corrector
            rhos = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(R, b)
            res = sum(rho.item() * d for rho, d in zip(rhos[:-1], d1s)) + rhos[-1].item() * (model_t - m0)
        return x - (alpha_t * b_h).item() * res

    def step(
        self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct ``sample`` with this output (UniC), then predict the next sample (UniP); ``(x_prev, x0_pred)``."""
        self._check(timestep)
        x0 = self.data_prediction(model_output, timestep, sample)
        if int(timestep) == int(self.timesteps[0]):
            self._last = None
        if self.use_corrector and self._last is not None and self._history:  # x0 stays the model's (uncorrected) one
            s0, last_sample, last_order = self._last
            sample = self._update(last_sample, s0, int(timestep), last_order, self._history, x0).to(sample.dtype)
        self._record(timestep, x0)
        t = self.previous_timestep(timestep)
        if t < 0:
            return x0, x0
        order = self._order(timestep)
        self._last = (int(timestep), sample, order)
        return self._update(sample, int(timestep), t, order, self._history, None).to(sample.dtype), x0
