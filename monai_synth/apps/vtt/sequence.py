"""The blinded study set and each reader's order: class-balanced (and label-balanced), seeded, with opaque tokens.

One study set is drawn once per study: ``n / 2`` real and ``n / 2`` synthetic images; when every image has a label,
each label gets the same count in both arms, so that neither the label nor the class mix hints at the answer. Every
reader reads the whole set (as the three radiologists of seed 001 read the same 30 images), each in an order of
their own, so that inter-reader agreement can be measured on every item.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

import numpy as np

from monai_synth.apps.vtt.items import REAL, SYNTHETIC, StudyItem

__all__ = ["TOKEN_BYTES", "balanced_counts", "draw_study_set", "new_token", "reader_order"]

TOKEN_BYTES = 16
"""Random bytes of a URL token (128 bits, URL-safe base64: 22 characters)."""


def new_token() -> str:
    """An opaque random token (:func:`secrets.token_urlsafe`), unrelated to any path, order, class or seed."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def _labels_known(items: Sequence[StudyItem]) -> bool:
    return bool(items) and all(it.label is not None for it in items)


def balanced_counts(real: Sequence[StudyItem], synthetic: Sequence[StudyItem], n: int | None) -> dict:
    """How many images of each ``(truth, label)`` stratum the study set takes (label ``None`` when unknown).

    Each arm gets ``n / 2`` images; with labels known in both arms each label gets ``n / 2 // L`` per arm and the
    remainder goes one each to the first labels in sorted order (the same labels in both arms).

    Args:
        real: the real images.
        synthetic: the synthetic images.
        n: images per reader (even); ``None`` takes the largest balanced set.

    Raises:
        ValueError: an odd or too small ``n``, more images than the strata hold, or a label found in one arm only
            (the messages give the counts and the largest possible ``n``).
    """
    if not real or not synthetic:
        raise ValueError(
            f"the study needs real and synthetic images; got {len(real)} real, {len(synthetic)} synthetic."
        )
    pools = {REAL: real, SYNTHETIC: synthetic}
    labelled = _labels_known(real) and _labels_known(synthetic)
    if labelled:
        labels = {t: sorted({it.label for it in items}) for t, items in pools.items()}
        if labels[REAL] != labels[SYNTHETIC]:
            raise ValueError(
                f"labels differ between the arms (real: {labels[REAL]}, synthetic: {labels[SYNTHETIC]}); balancing per "
                "label needs every label in both arms: add images, or give folders instead of datalists to balance "
                "on real/synthetic only."
            )
        names: list[str | None] = list(labels[REAL])
    else:
        names = [None]
    sizes = {(t, lab): sum(1 for it in items if lab is None or it.label == lab) for t, items in pools.items()
             for lab in names}  # fmt: skip
    n_max = 2 * len(names) * min(sizes.values())
    if n is None:
        n = n_max
    if not isinstance(n, int) or isinstance(n, bool) or n < 2 or n % 2:
        raise ValueError(
            f"`n` (images per reader) must be an even integer >= 2 (half real, half synthetic), got {n!r}."
        )
    half = n // 2
    per, rest = divmod(half, len(names))
    counts = {(t, lab): per + (1 if i < rest else 0) for t in pools for i, lab in enumerate(names)}
    short = {
        (t if lab is None else f"{t}/{lab}"): sizes[(t, lab)] for (t, lab), c in counts.items() if c > sizes[(t, lab)]
    }
    if short:
        raise ValueError(
            f"`n`={n} needs {half} images per arm{' split evenly over labels ' + str(names) if labelled else ''}, but "
            f"some strata hold fewer: {short}; the largest balanced n is {n_max}."
        )
    return counts


def draw_study_set(
    real: Sequence[StudyItem], synthetic: Sequence[StudyItem], n: int | None = None, seed: int = 0
) -> list[StudyItem]:
    """Draw the study set: balanced as :func:`balanced_counts`, uniformly at random within each stratum, shuffled.

    Same inputs and ``seed`` -> the same set in the same order; the inputs' own order does not matter.

    Args:
        real: the real images.
        synthetic: the synthetic images.
        n: images per reader (even); ``None`` takes the largest balanced set.
        seed: seed of the draw.
    """
    counts = balanced_counts(real, synthetic, n)
    rng = np.random.default_rng(int(seed))
    pools = {REAL: sorted(real, key=lambda it: it.path), SYNTHETIC: sorted(synthetic, key=lambda it: it.path)}
    chosen: list[StudyItem] = []
    for (truth, label), k in sorted(counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        stratum = [it for it in pools[truth] if label is None or it.label == label]
        chosen += [stratum[i] for i in rng.choice(len(stratum), size=k, replace=False)]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def reader_order(n: int, seed: int, reader_key: str) -> list[int]:
    """A permutation of ``range(n)`` for one reader, seeded by the study seed and the reader's name key."""
    digest = int.from_bytes(hashlib.sha256(reader_key.encode("utf-8")).digest()[:8], "big")
    return [int(i) for i in np.random.default_rng([int(seed), digest]).permutation(int(n))]
