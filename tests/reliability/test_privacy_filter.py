"""Near-copy filtering inside generation: a flagged candidate is never written, is recorded in generation.json, and
a resumed or crashed-then-resumed run gives exactly the uninterrupted result."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from helpers import tiny_unet

from monai_synth.data import load_image_2d
from monai_synth.engines import GenerationSettingsError, build_near_copy_filter, generate_dataset
from monai_synth.engines import generate as generate_module
from monai_synth.engines.diffusion import build_scheduler


def _unit(path) -> np.ndarray:
    """A written image back in [0, 1] (integer images divided by their type's maximum, as the writers store them)."""
    return load_image_2d(path, rescale="dtype").numpy()


def _generate(out, near_copy_filter=None, formats=("png",)):
    return generate_dataset(
        tiny_unet(), build_scheduler("ddim", num_train_timesteps=10), out, num_per_class=3, num_classes=2,
        image_size=8, formats=formats, num_inference_steps=2, batch_size=2, progress=False,
        near_copy_filter=near_copy_filter,
    )  # fmt: skip


def _files(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("synth_*"))}


@pytest.fixture(scope="module")
def unfiltered(tmp_path_factory):
    """The six candidates as an unfiltered run writes them, and a filter whose training set holds two of them."""
    out = tmp_path_factory.mktemp("unfiltered")
    res = _generate(out)
    images = np.stack([_unit(it["image"]) for it in res.items])
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.random((3, 1, 8, 8)).astype(np.float32), images[[4]], images[[1]]])
    filt = build_near_copy_filter(train, threshold=0.99)
    return out, images, filt


def test_memorised_candidates_are_never_written_and_are_reported(unfiltered, tmp_path):
    base, images, filt = unfiltered
    res = _generate(tmp_path, filt)
    assert sorted(res.dropped) == [1, 4]
    assert res.dropped[1]["reference"] == "train[4]" and res.dropped[4]["reference"] == "train[3]"
    assert all(d["score"] >= 0.99 for d in res.dropped.values())
    assert not list(tmp_path.rglob("synth_000001*")) and not list(tmp_path.rglob("synth_000004*"))
    names = sorted(_files(tmp_path))
    assert names == sorted(n for n in _files(base) if "000001" not in n and "000004" not in n)
    for n in names:  # the kept images are the unfiltered run's, byte for byte
        assert (tmp_path / n).read_bytes() == (base / n).read_bytes()
    kept = json.loads((tmp_path / "datalist.json").read_text())["training"]
    assert len(kept) == 4 and all("000001" not in e["image"] and "000004" not in e["image"] for e in kept)
    manifest = json.loads((tmp_path / "generation.json").read_text())
    assert sorted(manifest["dropped"]) == ["1", "4"] and manifest["privacy"]["threshold"] == 0.99
    report = json.loads((tmp_path / "privacy_report.json").read_text())
    assert report["checked"] and report["filtered"] and report["n_synthetic"] == 6 and report["n_written"] == 4
    assert report["method"] == "copy_descriptor" and report["n_reference"] == 5
    assert [r["synthetic"] for r in report["flagged"]] == sorted(
        ["class_0/synth_000001", "class_1/synth_000004"], key=lambda s: -res.dropped[int(s[-1])]["score"]
    )
    assert (tmp_path / "privacy_report.json").stat().st_mode & 0o077 == 0  # owner-only: it names training images


def test_resume_never_recreates_a_dropped_candidate(unfiltered, tmp_path):
    _, _, filt = unfiltered
    _generate(tmp_path, filt)
    before = _files(tmp_path)
    (tmp_path / "png" / "class_0" / "synth_000000.png").unlink()
    res = _generate(tmp_path, filt)
    assert res.written == 1 and res.skipped == 3 and sorted(res.dropped) == [1, 4]
    assert _files(tmp_path) == before


def test_a_crash_between_recording_and_writing_resumes_to_the_same_set(unfiltered, tmp_path, monkeypatch):
    """Killed after the drop of candidate 1 was recorded but before its batch mate 0 was written."""
    base, _, filt = unfiltered
    reference = tmp_path / "reference"
    _generate(reference, filt)
    real_write = generate_module._write_batch

    def crash(images, idx, *args, **kwargs):
        if 1 in idx:
            raise KeyboardInterrupt("simulated kill")
        return real_write(images, idx, *args, **kwargs)

    out = tmp_path / "crashed"
    monkeypatch.setattr(generate_module, "_write_batch", crash)
    with pytest.raises(KeyboardInterrupt):
        _generate(out, filt)
    assert json.loads((out / "generation.json").read_text())["dropped"].keys() == {"1"}
    assert not list(out.rglob("synth_*")) and not (out / "datalist.json").exists()
    monkeypatch.setattr(generate_module, "_write_batch", real_write)
    _generate(out, filt)
    assert _files(out) == _files(reference)
    assert json.loads((out / "datalist.json").read_text())["training"] == [
        {**e, "image": e["image"].replace(str(reference), str(out))}
        for e in json.loads((reference / "datalist.json").read_text())["training"]
    ]


def test_another_threshold_is_refused_on_resume(unfiltered, tmp_path):
    _, images, filt = unfiltered
    _generate(tmp_path, filt)
    other = build_near_copy_filter(images[:2], threshold=0.95)
    with pytest.raises(GenerationSettingsError, match="privacy"):
        _generate(tmp_path, other)
    with pytest.raises(GenerationSettingsError, match="privacy"):
        _generate(tmp_path, None)  # switching the filter off on resume is refused as well


def test_unfiltered_sets_say_so(unfiltered, caplog):
    base, _, _ = unfiltered
    report = json.loads((base / "privacy_report.json").read_text())
    assert report["checked"] is False and report["flagged"] is None and "NOT checked" in report["warning"]
    with caplog.at_level(logging.WARNING):
        _generate(base)
    assert "no near-copy filter" in caplog.text


def test_every_format_skips_the_dropped_candidate(unfiltered, tmp_path):
    _, _, filt = unfiltered
    res = _generate(tmp_path, filt, formats=("png", "nifti", "dicom"))
    for fmt in ("png", "nifti", "dicom"):
        kept = json.loads((tmp_path / f"datalist_{fmt}.json").read_text())["training"]
        assert len(kept) == 4
    assert not [p for p in tmp_path.rglob("synth_00000[14]*")] and sorted(res.dropped) == [1, 4]


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "", "c:\\x", "a\\b"])
def test_class_names_cannot_leave_the_output_folder(tmp_path, name):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="class name"):
        generate_dataset(
            tiny_unet(), build_scheduler("ddim", num_train_timesteps=10), out, num_per_class=1, num_classes=2,
            image_size=8, num_inference_steps=2, progress=False, class_names=["ok", name],
        )  # fmt: skip
    assert not (tmp_path / "escape").exists() and not list(tmp_path.rglob("*.png"))


def test_pipeline_synthesize_passes_the_filter(unfiltered, tmp_path):
    """``synthesize(near_copy_filter=)``: a memorised image never reaches the in-memory items."""
    from monai_synth.apps.augmentation import DiffusionRecipe, GeneratorResult, synthesize

    recipe = DiffusionRecipe(image_size=8, sample_steps=2)
    gen = GeneratorResult(tiny_unet(), build_scheduler("ddpm", num_train_timesteps=10), 2, 0, 0, 0.0, 0.0, "")
    items, _ = synthesize(gen, 2, tmp_path / "a", recipe, seed=3)
    filt = build_near_copy_filter(np.stack([items[1]["image"]]), threshold=0.99)
    kept, _ = synthesize(gen, 2, tmp_path / "b", recipe, seed=3, near_copy_filter=filt)
    assert len(kept) == 3 and [it["label"] for it in kept] == [0, 1, 1]
    report = json.loads((tmp_path / "b" / "privacy_report.json").read_text())
    assert [r["synthetic"] for r in report["flagged"]] == ["class_0/synth_000001"]


def test_nan_samples_are_refused_and_nothing_of_the_batch_is_written(tmp_path):
    class NaNNet(torch.nn.Module):
        in_channels = 1
        num_class_embeds = None

        def forward(self, x, timesteps=None, context=None, class_labels=None):
            return torch.full_like(x, float("nan"))

    with pytest.raises(FloatingPointError, match="nothing of this batch was written"):
        generate_dataset(
            NaNNet(), build_scheduler("ddim", num_train_timesteps=10), tmp_path, num_per_class=[2], image_size=8,
            num_inference_steps=2, progress=False,
        )  # fmt: skip
    assert not list(tmp_path.rglob("synth_*")) and not (tmp_path / "datalist.json").exists()
