"""Near-copy detection that survives the usual evasions: flips, small shifts, gamma, crop-and-resize, noise.

A raw-pixel distance (:func:`monai_synth.metrics.memorization.pixel_vectors`) misses a training image that was
mirrored, shifted by a few pixels or re-windowed. This module scores a candidate against a reference image by the
largest normalised correlation of their *copy descriptors* over the transformations a copy may have undergone:

1. **Equalisation** (invariance to monotone intensity changes: gamma, window, contrast). Each image is replaced by
   its empirical CDF, ``u = F(x)`` with 256 bins (histogram equalisation): a monotone map ``g`` gives ``F_{g(x)}(g(x))
   = F_x(x)``, so gamma 0.8-1.25 leaves the descriptor unchanged up to quantisation.
2. **Low-pass at a fixed grid** (invariance to size and noise): the equalised image is resized to ``grid x grid``
   (anti-aliased) and blurred with a Gaussian of ``sigma`` grid cells. Images of any size compare; pixel noise of
   sigma 0.02 is averaged away.
3. **Search over flips, shifts and scales** (invariance to mirroring, translation, crop-and-resize): the reference
   keeps the central ``k x k`` window (``k = grid - 2 * margin``); the candidate is tried mirrored and not, at each
   scale in ``scales`` (a 90 % crop resized back is undone by shrinking by 0.9) and at every offset of a ``k x k``
   window within ``margin`` cells of the centre. The score is the largest Pearson correlation over these variants,
   in ``[-1, 1]``; an exact copy scores 1.

Scale: references are indexed once (:class:`NearCopyIndex`). A query is first compared to every reference by a
shortlist vector that ignores translation and mirroring, the log-magnitude of the map's low spatial frequencies
(:meth:`CopyDescriptor.spectrum`; one vector per scale), and only the ``shortlist`` best references get the full
search. The two stages cost ``O(n * m * scales * K^2)`` and ``O(n * shortlist * variants * k^2)`` multiply-adds;
the time for 10 000 candidates against 50 000 references at 64 x 64 on a 2-core CPU is in docs/privacy.md
(``benchmarks/copy_detection.py``).

Threshold: as in the "distance to closest record" rule of :mod:`monai_synth.metrics.memorization`, a synthetic
image that resembles a training image more than nearly all *real unseen* images do is a suspected copy:
:func:`calibrate_threshold` takes a high quantile of the scores of held-out real images (patient-disjoint from the
references) against the references.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from monai_synth.metrics.features import as_float_images

__all__ = [
    "COPY_METHOD",
    "CopyDescriptor",
    "EVASIONS",
    "NearCopyIndex",
    "calibrate_threshold",
    "copy_score",
    "equalize",
    "planted_copies",
]

COPY_METHOD = "copy_descriptor"
"""Name of the measure in reports (``method`` field)."""

_BINS = 256


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram-equalise each ``(N, 1, H, W)`` image in ``[0, 1]``: every pixel becomes the fraction of the image's
    pixels at or below its level (256 levels), centred to ``[-0.5, 0.5]``.

    Monotone intensity maps (gamma, windowing) leave the result unchanged up to the 256-level quantisation.
    """
    n = images.shape[0]
    if n == 0 or images.numel() == 0:
        return images.clone()
    levels = (images.reshape(n, -1).clamp(0, 1) * (_BINS - 1)).round().long()
    counts = torch.zeros(n, _BINS, dtype=torch.float32, device=images.device)
    counts.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float32))
    cdf = counts.cumsum(1) / levels.shape[1]
    return (cdf.gather(1, levels) - 0.5).reshape(images.shape)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, 1, H, W)`` maps (replicate borders); ``sigma <= 0`` returns ``x``."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel(sigma).to(x.device)
    r = min((k.numel() - 1) // 2, x.shape[-1] - 1, x.shape[-2] - 1)
    k = k[(k.numel() - 1) // 2 - r : (k.numel() - 1) // 2 + r + 1]
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.reshape(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.reshape(1, 1, -1, 1))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """Zero-mean, unit-norm rows (a constant row stays zero)."""
    x = x - x.mean(dim=-1, keepdim=True)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


@dataclass(frozen=True)
class CopyDescriptor:
    """Settings of the copy descriptor (module docstring).

    Attributes:
        grid: descriptor resolution (images of any size are resized to ``grid x grid``).
        margin: shift search range in grid cells each way (8 cells of a 64 grid: 8 px at 64 px, enough for a 4 px
            shift combined with an off-centre 90 % crop).
        sigma: Gaussian blur in grid cells.
        flips: also try the mirrored candidate (left-right).
        scales: candidate scales tried (1.0 plus 0.9 undoes a 90 % crop resized to full size).
        spectrum_size: highest spatial frequency ``K`` of the shortlist spectrum.
        shortlist: references per query scored by the full search after the shortlist stage.
    """

    grid: int = 64
    margin: int = 8
    sigma: float = 1.0
    flips: bool = True
    scales: tuple[float, ...] = (1.0, 0.9)
    spectrum_size: int = 10
    shortlist: int = 32

    def __post_init__(self) -> None:
        if int(self.grid) < 8 or int(self.margin) < 0 or self.window < 4:
            raise ValueError(
                f"CopyDescriptor needs grid >= 8, margin >= 0 and grid - 2 * margin >= 4, got grid={self.grid}, "
                f"margin={self.margin}."
            )
        if not self.scales or any(not 0.5 <= float(s) <= 1.0 for s in self.scales):
            raise ValueError(f"`scales` must be values in [0.5, 1.0], got {self.scales!r}.")
        if not 1 <= int(self.spectrum_size) < int(self.grid) // 2:
            raise ValueError(f"`spectrum_size` must be in [1, grid / 2), got {self.spectrum_size}.")
        if int(self.shortlist) < 1 or float(self.sigma) < 0:
            raise ValueError(f"`shortlist` must be >= 1 and `sigma` >= 0, got {self.shortlist}, {self.sigma}.")

    @property
    def window(self) -> int:
        """Side of the compared window, ``grid - 2 * margin``."""
        return int(self.grid) - 2 * int(self.margin)

    def settings(self) -> dict:
        """JSON-ready settings (recorded with every threshold and report)."""
        return {**asdict(self), "scales": [float(s) for s in self.scales], "method": COPY_METHOD}

    # -- stages ------------------------------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor | np.ndarray, name: str = "images") -> torch.Tensor:
        """Equalised, resized, blurred ``(N, 1, grid, grid)`` maps of ``(N, C, H, W)`` images in ``[0, 1]``/uint8."""
        x = as_float_images(images, name)
        if x.ndim != 4:
            raise ValueError(f"`{name}` must be 2D images (N, C, H, W), got shape {tuple(x.shape)}.")
        x = equalize(x.mean(dim=1, keepdim=True))
        g = int(self.grid)
        if x.shape[-2:] != (g, g):
            shrink = x.shape[-1] > g or x.shape[-2] > g
            x = F.interpolate(x, size=(g, g), mode="bilinear", align_corners=False, antialias=shrink)
        return _blur(x, float(self.sigma))

    def spectrum(self, maps: torch.Tensor) -> torch.Tensor:
        """``(N, (K+1)^2)`` shortlist vectors: log-magnitude of the Hann-windowed map's low frequencies (``|k| <=
        K = spectrum_size``), averaged over the sign of one frequency axis.

        The Fourier magnitude ignores translation; averaging ``|F(kx, ky)|`` with ``|F(kx, -ky)|`` (which is
        ``|F|`` of the mirrored image) ignores a left-right flip; the low band ignores noise.
        """
        g, k = int(self.grid), int(self.spectrum_size)
        w = torch.hann_window(g, periodic=False, device=maps.device)
        m = maps[:, 0] - maps[:, 0].mean(dim=(1, 2), keepdim=True)
        f = torch.fft.rfft2(m * w[:, None] * w[None, :]).abs()[:, :, : k + 1]  # (N, ky, kx >= 0)
        pos = f[:, : k + 1]
        neg = torch.cat([f[:, :1], f[:, g - k :].flip(1)], dim=1)  # ky = 0, -1, ..., -k
        return _normalise(torch.log1p(0.5 * (pos + neg)).flatten(1))

    def _scaled(self, maps: torch.Tensor, scale: float) -> torch.Tensor:
        """Maps shrunk by ``scale`` about the centre, replicate-padded back to ``grid x grid``."""
        g = int(self.grid)
        size = max(self.window, int(round(g * float(scale))))
        if size == g:
            return maps
        x = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
        lo = g - size
        return F.pad(x, (lo // 2, lo - lo // 2, lo // 2, lo - lo // 2), mode="replicate")

    def reference_vectors(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(full ``(m, k*k)`` unit vectors of the central window, shortlist ``(m, (K+1)^2)`` spectra) of prepared
        reference maps."""
        m, k = int(self.margin), self.window
        return _normalise(maps[:, :, m : m + k, m : m + k].flatten(1)), self.spectrum(maps)

    def coarse_queries(self, maps: torch.Tensor) -> torch.Tensor:
        """``(n, scales, (K+1)^2)`` shortlist spectra of the candidates at each scale (re-padded to the grid)."""
        return torch.stack([self.spectrum(self._scaled(maps, s)) for s in self.scales], dim=1)

    def query_variants(self, maps: torch.Tensor) -> torch.Tensor:
        """``(n, variants, k*k)`` unit vectors of every flip x scale x offset window of the candidates (offsets
        within ``margin`` of the centre)."""
        k = self.window
        out = []
        for o in [maps, maps.flip(-1)] if self.flips else [maps]:
            for s in self.scales:
                patches = self._scaled(o, s).unfold(2, k, 1).unfold(3, k, 1)[:, 0]
                out.append(patches.reshape(maps.shape[0], -1, k * k))
        return _normalise(torch.cat(out, dim=1))


class NearCopyIndex:
    """Reference images indexed for near-copy search (module docstring).

    Args:
        references: ``(m, C, H, W)`` images in ``[0, 1]`` or uint8 (any size), or an iterable of such batches
            (descriptors are computed batch by batch, so a large reference set never sits in memory as pixels).
        descriptor: :class:`CopyDescriptor` settings.

    Raises:
        ValueError: no reference images, or images that are not ``(N, C, H, W)`` in ``[0, 1]``/uint8.
    """

    def __init__(
        self,
        references: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
        descriptor: CopyDescriptor | None = None,
    ) -> None:
        self.descriptor = descriptor or CopyDescriptor()
        batches = [references] if isinstance(references, (torch.Tensor, np.ndarray)) else references
        full, coarse = [], []
        for batch in batches:
            if len(batch) == 0:
                continue
            f, c = self.descriptor.reference_vectors(self.descriptor.prepare(batch, "references"))
            full.append(f)
            coarse.append(c)
        if not full or sum(len(f) for f in full) == 0:
            raise ValueError("the reference set is empty: give at least one reference image.")
        self.full, self.coarse = torch.cat(full), torch.cat(coarse)

    def __len__(self) -> int:
        return int(self.full.shape[0])

    def search(
        self, candidates: torch.Tensor | np.ndarray, chunk_size: int = 512, exclude: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best-matching reference of every candidate.

        Args:
            candidates: ``(n, C, H, W)`` images in ``[0, 1]`` or uint8.
            chunk_size: candidates per step (memory: ``chunk_size * len(self)`` coarse scores).
            exclude: per candidate, one reference index to ignore (or -1): the candidate itself when the candidates
                are the references (leave-one-out).

        Returns:
            ``(scores (n,) float32 in [-1, 1], reference indices (n,) int64)``.
        """
        d = self.descriptor
        maps = d.prepare(candidates, "candidates")
        n = maps.shape[0]
        scores = torch.empty(n, dtype=torch.float32)
        best = torch.empty(n, dtype=torch.long)
        k = min(int(d.shortlist), len(self))
        skip = None if exclude is None else torch.as_tensor(list(exclude), dtype=torch.long)
        if skip is not None and skip.numel() != n:
            raise ValueError(f"`exclude` has {skip.numel()} entries for {n} candidates.")
        exhaustive = k == len(self)
        n_var, dim = d.query_variants(maps[:1]).shape[1:]
        budget = 2**26  # float32 values per intermediate (256 MB)
        per_query = max(n_var * dim, n_var * k, k * dim, len(d.scales) * len(self))
        step = max(1, min(int(chunk_size), budget // per_query))
        for s in range(0, n, step):
            part = maps[s : s + step]
            ex = None if skip is None else skip[s : s + part.shape[0]]
            if exhaustive:  # every reference gets the full search
                short = torch.arange(len(self)).expand(part.shape[0], -1)
                full = torch.einsum("cvd,md->cvm", d.query_variants(part), self.full).amax(dim=1)
            else:
                coarse = torch.einsum("nvd,md->nvm", d.coarse_queries(part), self.coarse).amax(dim=1)
                if ex is not None:
                    rows = torch.nonzero(ex >= 0).reshape(-1)
                    coarse[rows, ex[rows]] = -float("inf")
                short = coarse.topk(k, dim=1).indices  # (c, k)
                full = torch.einsum("cvd,ckd->cvk", d.query_variants(part), self.full[short]).amax(dim=1)
            if ex is not None:
                full = full.masked_fill(short == ex[:, None], -float("inf"))
            value, pos = full.max(dim=1)
            scores[s : s + part.shape[0]] = value.clamp(-1.0, 1.0)
            best[s : s + part.shape[0]] = short.gather(1, pos[:, None]).reshape(-1)
        return scores, best


def copy_score(
    candidate: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray, descriptor: CopyDescriptor | None = None
) -> float:
    """Score of one ``(C, H, W)`` candidate against one reference (exhaustive, no shortlist)."""
    d = descriptor or CopyDescriptor()
    ref = d.reference_vectors(d.prepare(torch.as_tensor(np.asarray(reference))[None], "reference"))[0]
    q = d.query_variants(d.prepare(torch.as_tensor(np.asarray(candidate))[None], "candidate"))
    return float((q[0] @ ref[0]).max().clamp(-1.0, 1.0))


def calibrate_threshold(
    index: NearCopyIndex, holdout: torch.Tensor | np.ndarray, quantile: float = 0.99
) -> tuple[float, torch.Tensor]:
    """Threshold from real images the generator never saw (patient-disjoint from the references).

    Args:
        index: the indexed training (reference) images.
        holdout: ``(n, C, H, W)`` held-out real images.
        quantile: the share of held-out images that score below the threshold (0.99: a synthetic image is flagged
            when it resembles a training image more than 99 % of unseen real images do).

    Returns:
        ``(threshold, held-out scores)``.

    Raises:
        ValueError: ``quantile`` outside ``(0, 1]`` or fewer than 2 held-out images.
    """
    if not 0.0 < float(quantile) <= 1.0:
        raise ValueError(f"`quantile` must be in (0, 1], got {quantile!r}.")
    scores, _ = index.search(holdout)
    if scores.numel() < 2:
        raise ValueError(f"calibration needs at least 2 held-out real images, got {scores.numel()}.")
    return float(torch.quantile(scores.double(), float(quantile))), scores


EVASIONS: tuple[str, ...] = ("flip", "shift", "gamma", "crop90", "noise")
"""Edits a copier might apply to hide a copied image (validation of the measure, docs/privacy.md)."""


def planted_copies(
    images: torch.Tensor | np.ndarray, edits: Sequence[str], seed: int = 0, max_shift: int = 4
) -> torch.Tensor:
    """Edited copies of ``(N, C, H, W)`` images in ``[0, 1]``, to check that a near-copy measure still finds them.

    Edits (applied in the given order, random parameters drawn per image from ``seed``): ``"flip"`` left-right;
    ``"shift"`` by up to ``max_shift`` px each way (replicate border); ``"gamma"`` with exponent in
    ``[0.8, 1.25]``; ``"crop90"`` a 90 % crop at a random position resized back; ``"noise"`` Gaussian, sigma 0.02,
    clipped to ``[0, 1]``.

    Raises:
        ValueError: an unknown edit name.
    """
    unknown = [e for e in edits if e not in EVASIONS]
    if unknown:
        raise ValueError(f"unknown edit(s) {unknown}; choose from {list(EVASIONS)}.")
    g = torch.Generator().manual_seed(int(seed))
    x = as_float_images(images, "images").clone()
    n, _, h, w = x.shape
    for edit in edits:
        if edit == "flip":
            x = x.flip(-1)
        elif edit == "shift":
            s = int(max_shift)
            padded = F.pad(x, (s, s, s, s), mode="replicate")
            d = torch.randint(-s, s + 1, (n, 2), generator=g).tolist()
            x = torch.stack([padded[i, :, s + dy : s + dy + h, s + dx : s + dx + w] for i, (dy, dx) in enumerate(d)])
        elif edit == "gamma":
            x = x.clamp(0, 1) ** torch.empty(n, 1, 1, 1).uniform_(0.8, 1.25, generator=g)
        elif edit == "crop90":
            ch, cw = int(round(0.9 * h)), int(round(0.9 * w))
            y0 = torch.randint(0, h - ch + 1, (n,), generator=g).tolist()
            x0 = torch.randint(0, w - cw + 1, (n,), generator=g).tolist()
            x = torch.cat(
                [
                    F.interpolate(x[i : i + 1, :, a : a + ch, b : b + cw], size=(h, w), mode="bilinear")
                    for i, (a, b) in enumerate(zip(y0, x0))
                ]
            ).clamp(0, 1)
        else:
            x = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x
