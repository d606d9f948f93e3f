"""Is the synthesized lesion where its box says? A check for guided samples (seed 001, Eqs. 4-5).

A guided sample ``x`` follows an anatomy reference ``y_1`` everywhere and a pathology reference inside a box. What
the sample adds to its anatomy is ``d_x = phi_n(x) - phi_n(y_1)``; what the lesion would add is the *lesion
template* ``d_l = phi_n(l) - phi_n(y_1)``, with ``l`` the anatomy carrying the prepared lesion patch unweighted
(``phi_n`` is the low-pass filter of Eq. 3, :func:`monai_synth.inferers.lowpass.lowpass_filter`). Inside the box
the two are compared three ways:

- ``correlation``: Pearson correlation of ``d_x`` and ``d_l`` over the box pixels (does the structure follow the
  lesion?);
- ``gain``: least-squares slope of ``d_x`` on ``d_l`` over the box (how much of the lesion's contrast arrived:
  1 = all, 0 = none);
- ``displaced``: the largest correlation of the same template with ``d_x`` cut at the box moved by one box size
  left, right, up or down (where it fits): the lesion must match better at its box than beside it.

A sample passes (``inside``) when ``correlation >= min_correlation``, ``gain >= min_gain`` (a few noisy pixels can
correlate by chance, but carry no lesion contrast) and ``correlation >= displaced + min_margin``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from monai_synth.data.annotations import BoundingBox
from monai_synth.inferers.lowpass import lowpass_filter

__all__ = ["LesionInBox", "lesion_in_box", "lesion_in_box_batch", "summarize_lesion_scores"]

DEFAULT_MIN_CORRELATION = 0.5
DEFAULT_MIN_GAIN = 0.25
DEFAULT_MIN_MARGIN = 0.05


@dataclass(frozen=True)
class LesionInBox:
    """The lesion check of one sample (see the module docstring)."""

    correlation: float
    gain: float
    displaced: float
    inside: bool

    def to_dict(self) -> dict[str, float | bool | None]:
        """Plain dict for JSON sidecars; NaN (a flat box has no correlation) becomes ``None``."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def _as_image(name: str, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)
    if t.ndim == 3:
        t = t[0]
    if t.ndim != 2:
        raise ValueError(f"`{name}` must be (rows, cols) or (1, rows, cols), got shape {tuple(t.shape)}.")
    return t


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    den = float(torch.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else float("nan")


def lesion_in_box(
    sample: torch.Tensor | np.ndarray,
    anatomy: torch.Tensor | np.ndarray,
    lesion: torch.Tensor | np.ndarray,
    box: BoundingBox,
    factor: int = 2,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    min_gain: float = DEFAULT_MIN_GAIN,
    min_margin: float = DEFAULT_MIN_MARGIN,
) -> LesionInBox:
    """Score whether ``sample`` carries the lesion of ``lesion`` inside ``box`` (module docstring).

    Args:
        sample: the guided sample, ``(rows, cols)`` or ``(1, rows, cols)``.
        anatomy: its anatomy reference ``y_1`` (same shape, same intensity range).
        lesion: ``y_1`` with the prepared lesion patch pasted unweighted (``ReferencePairs.lesion``).
        box: the lesion box written next to the sample (inclusive pixel bounds).
        factor: low-pass factor ``n`` of the comparison (the pathology factor ``n_2`` of sampling); must divide
            the image size.
        min_correlation: the correlation a sample needs to pass.
        min_gain: the gain a sample needs to pass.
        min_margin: how much better the lesion must match at its box than at the best displaced box.

    Raises:
        ValueError: when the shapes differ or the box lies outside the image.
    """
    x, y1, lt = (_as_image(n, v) for n, v in (("sample", sample), ("anatomy", anatomy), ("lesion", lesion)))
    if not (x.shape == y1.shape == lt.shape):
        raise ValueError(
            f"`sample`, `anatomy` and `lesion` must have one shape, got {tuple(x.shape)}, {tuple(y1.shape)}, "
            f"{tuple(lt.shape)}."
        )
    rows, cols = x.shape
    if not (0 <= box.xmin <= box.xmax < cols and 0 <= box.ymin <= box.ymax < rows):
        raise ValueError(f"box {box.to_dict()} lies outside the {rows}x{cols} image.")
    stack = torch.stack([x, y1, lt])[:, None]
    low = lowpass_filter(stack, factor)[:, 0]
    d_x, d_l = low[0] - low[1], low[2] - low[1]
    h, w = box.height, box.width
    ys, xs = slice(box.ymin, box.ymax + 1), slice(box.xmin, box.xmax + 1)
    t = d_l[ys, xs]
    corr = _corr(d_x[ys, xs], t)
    var = float(((t - t.mean()) ** 2).sum())
    gain = float(((d_x[ys, xs] - d_x[ys, xs].mean()) * (t - t.mean())).sum()) / var if var > 0 else float("nan")
    displaced = []
    for dy, dx in ((0, -w), (0, w), (-h, 0), (h, 0)):
        y0, x0 = box.ymin + dy, box.xmin + dx
        if 0 <= y0 and y0 + h <= rows and 0 <= x0 and x0 + w <= cols:
            displaced.append(_corr(d_x[y0 : y0 + h, x0 : x0 + w], t))
    displaced = [c for c in displaced if np.isfinite(c)]
    worst = max(displaced) if displaced else float("nan")
    passes = np.isfinite(corr) and corr >= min_correlation and np.isfinite(gain) and gain >= min_gain
    inside = bool(passes and not (np.isfinite(worst) and worst > corr - min_margin))
    return LesionInBox(corr, gain, worst, inside)


def lesion_in_box_batch(
    samples: torch.Tensor,
    anatomy: torch.Tensor,
    lesion: torch.Tensor,
    boxes: Sequence[BoundingBox],
    factor: int = 2,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    min_gain: float = DEFAULT_MIN_GAIN,
) -> list[LesionInBox]:
    """:func:`lesion_in_box` for each of ``N`` samples ``(N, 1, rows, cols)`` with their references and boxes."""
    if not (len(samples) == len(anatomy) == len(lesion) == len(boxes)):
        raise ValueError(
            f"samples ({len(samples)}), anatomy ({len(anatomy)}), lesion ({len(lesion)}) and boxes ({len(boxes)}) "
            "must have one length."
        )
    return [
        lesion_in_box(s, a, le, b, factor, min_correlation, min_gain)
        for s, a, le, b in zip(samples, anatomy, lesion, boxes)
    ]


def summarize_lesion_scores(scores: Sequence[LesionInBox]) -> dict[str, float | int | None]:
    """Fraction inside and the medians of correlation, gain and displaced correlation (NaNs left out; ``None``
    where nothing is left)."""

    def med(values: list[float]) -> float | None:
        v = [x for x in values if np.isfinite(x)]
        return float(np.median(v)) if v else None

    return {
        "n": len(scores),
        "fraction_inside": float(np.mean([s.inside for s in scores])) if scores else None,
        "median_correlation": med([s.correlation for s in scores]),
        "median_gain": med([s.gain for s in scores]),
        "median_displaced": med([s.displaced for s in scores]),
    }
