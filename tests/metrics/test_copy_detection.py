"""Copy descriptor: values against independent computations, invariances, planted copies on real chest X-rays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_synth.metrics.copy_detection import (
    EVASIONS,
    CopyDescriptor,
    NearCopyIndex,
    calibrate_threshold,
    copy_score,
    equalize,
    planted_copies,
)


def _textures(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] (blurred noise): distinct, but with structure at every scale."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size // 4, size // 4, generator=g)
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    x = x + 0.3 * F.interpolate(torch.rand(n, 1, size // 2, size // 2, generator=g), size=(size, size), mode="bilinear")
    return (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True) - x.amin((2, 3), keepdim=True))


def test_equalize_is_the_empirical_cdf():
    x = torch.rand(3, 1, 9, 7)
    levels = (x * 255).round().numpy().reshape(3, -1)
    expected = np.stack([np.searchsorted(np.sort(row), row, side="right") / row.size for row in levels]) - 0.5
    np.testing.assert_allclose(equalize(x).numpy().reshape(3, -1), expected, atol=1e-6)


def test_equalize_ignores_monotone_intensity_changes():
    x = _textures(4)
    for gamma in (0.8, 1.25):
        assert (equalize(x) - equalize(x**gamma)).abs().max() < 0.02  # only the 256-level quantisation differs


def _brute_score(cand: torch.Tensor, ref: torch.Tensor, d: CopyDescriptor) -> float:
    """Independent reference at one scale: Pearson correlation over every offset and flip, by explicit loops."""
    c, r = d.prepare(cand[None])[0, 0].double().numpy(), d.prepare(ref[None])[0, 0].double().numpy()
    k, m = d.window, d.margin
    rw = r[m : m + k, m : m + k].ravel()
    best = -1.0
    for img in (c, c[:, ::-1]) if d.flips else (c,):
        for dy in range(2 * m + 1):
            for dx in range(2 * m + 1):
                best = max(best, float(np.corrcoef(img[dy : dy + k, dx : dx + k].ravel(), rw)[0, 1]))
    return best


def test_score_is_the_best_correlation_over_offsets_and_flips():
    d = CopyDescriptor(grid=16, margin=2, sigma=0.5, scales=(1.0,), spectrum_size=4)
    x = _textures(3, 24, seed=1)
    for i, j in [(0, 1), (1, 2), (2, 0), (0, 0)]:
        assert copy_score(x[i], x[j], d) == pytest.approx(_brute_score(x[i], x[j], d), abs=1e-5)


def test_exact_and_mirrored_copies_score_one():
    x = _textures(2, seed=2)
    assert copy_score(x[0], x[0]) == pytest.approx(1.0, abs=1e-5)
    assert copy_score(x[0].flip(-1), x[0]) == pytest.approx(1.0, abs=1e-5)
    assert copy_score(x[0].flip(-1), x[0], CopyDescriptor(flips=False)) < 0.9
    assert copy_score(x[1], x[0]) < 0.9


def test_images_of_other_sizes_and_uint8_compare():
    x = _textures(1, 64, seed=3)
    small = F.interpolate(x, size=(40, 40), mode="bilinear", antialias=True)
    assert copy_score((small[0] * 255).round().to(torch.uint8), x[0]) > 0.98


def test_index_search_equals_the_exhaustive_score():
    refs, cands = _textures(12, seed=4), _textures(5, seed=5)
    cands[2] = planted_copies(refs[7:8], ("flip", "shift"), seed=1)[0]
    d = CopyDescriptor(shortlist=4)
    scores, best = NearCopyIndex(refs, d).search(cands)
    full = np.array([[copy_score(c, r, d) for r in refs] for c in cands])
    assert best[2] == 7 and scores[2] == pytest.approx(full[2].max(), abs=1e-5) and scores[2] > 0.99
    assert (scores.numpy() <= full.max(1) + 1e-5).all()  # a shortlist can only miss, never invent, a match
    ex_scores, ex_best = NearCopyIndex(refs, CopyDescriptor(shortlist=100)).search(cands)
    np.testing.assert_allclose(ex_scores.numpy(), full.max(1), atol=1e-5)
    assert ex_best.tolist() == full.argmax(1).tolist()


def test_batches_of_references_and_leave_one_out():
    refs = _textures(10, seed=6)
    whole, parts = NearCopyIndex(refs), NearCopyIndex([refs[:4], refs[4:]])
    assert len(parts) == 10 and torch.allclose(whole.full, parts.full)
    scores, best = whole.search(refs, exclude=range(10))
    assert (best != torch.arange(10)).all() and (scores < 0.999).all()


@pytest.mark.parametrize("edit", [*[(e,) for e in EVASIONS], EVASIONS])
def test_planted_copies_score_above_independent_images(edit):
    refs, holdout = _textures(40, 64, seed=7), _textures(40, 64, seed=8)
    index = NearCopyIndex(refs)
    threshold, _ = calibrate_threshold(index, holdout, 0.99)
    scores, best = index.search(planted_copies(refs[:10], edit, seed=3))
    assert (scores >= threshold).all() and (best == torch.arange(10)).all(), (scores, threshold)


def test_planted_copies_edits():
    x = _textures(4, seed=9)
    assert torch.equal(planted_copies(x, ("flip",)), x.flip(-1))
    shifted = planted_copies(x, ("shift",), seed=0, max_shift=2)
    assert shifted.shape == x.shape and not torch.equal(shifted, x)
    noisy = planted_copies(x, ("noise",), seed=0)
    assert 0.01 < float((noisy - x).std()) < 0.03 and noisy.min() >= 0 and noisy.max() <= 1
    assert torch.equal(planted_copies(x, (), seed=0), x)
    with pytest.raises(ValueError, match="unknown edit"):
        planted_copies(x, ("rotate",))


def test_planted_copies_of_real_chest_xrays_are_found(shared_data):
    """Real data: edited copies of Kermany training images are found; images of other patients mostly are not."""
    from monai_synth.data import load_labelled_splits

    splits = load_labelled_splits("folder", shared_data / "kermany_cxr224", image_size=64, seed=0)
    stack = {k: torch.stack([torch.as_tensor(np.asarray(it["image"])) for it in v[:600]]) for k, v in splits.items()}
    index = NearCopyIndex(stack["train"])
    threshold, _ = calibrate_threshold(index, stack["val"], 0.99)
    test_scores, _ = index.search(stack["test"][:300])
    assert float((test_scores >= threshold).double().mean()) <= 0.05
    scores, _ = index.search(planted_copies(stack["train"][:40], EVASIONS, seed=1))
    assert float((scores >= threshold).double().mean()) >= 0.9


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: CopyDescriptor(grid=4), "grid"),
        (lambda: CopyDescriptor(grid=16, margin=7), "grid - 2"),
        (lambda: CopyDescriptor(scales=(1.0, 1.2)), "scales"),
        (lambda: CopyDescriptor(scales=()), "scales"),
        (lambda: CopyDescriptor(shortlist=0), "shortlist"),
        (lambda: CopyDescriptor(spectrum_size=40), "spectrum_size"),
        (lambda: NearCopyIndex(torch.zeros(0, 1, 8, 8)), "empty"),
        (lambda: NearCopyIndex([]), "empty"),
        (lambda: NearCopyIndex(-torch.ones(2, 1, 8, 8)), r"\[0, 1\]"),
        (lambda: NearCopyIndex(torch.zeros(2, 8, 8)), "2D images"),
        (lambda: NearCopyIndex(torch.zeros(2, 1, 8, 8, dtype=torch.int32)), "dtype"),
        (lambda: NearCopyIndex(torch.rand(3, 1, 8, 8)).search(torch.rand(2, 1, 8, 8), exclude=[0]), "exclude"),
        (lambda: calibrate_threshold(NearCopyIndex(torch.rand(3, 1, 8, 8)), torch.rand(4, 1, 8, 8), 0.0), "quantile"),
        (lambda: calibrate_threshold(NearCopyIndex(torch.rand(3, 1, 8, 8)), torch.rand(1, 1, 8, 8)), "at least 2"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_settings_and_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
