"""Tests for the guided-synthesis glue (seed 001): image preparation, reference pairs, sampling, annotated output."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import torch
from helpers import CT_STUDY, CT_UID_FIRST, IdentityCodec, tiny_unet
from monai.networks.schedulers import DDIMScheduler
from PIL import Image

from monai_synth.apps.guided import (
    GUIDANCE_MODES,
    GuidedSampler,
    PreparedImage,
    anatomy_references,
    breast_bounding_box,
    build_reference_pairs,
    cut_patch,
    guided_sample_pairs,
    load_ct_slice,
    load_mammogram,
    load_prepared_images,
    make_demo_guided_data,
    mammo_patch_transform,
    prepare_mammo_patch,
    reference_id,
    resolve_guided_data,
    run_guided_sampling,
    save_montage,
    with_boxes,
    without_boxes,
    write_annotated_samples,
)
from monai_synth.data.annotations import BoundingBox, load_voc_annotations
from monai_synth.handlers import load_weights_for_sampling
from monai_synth.inferers import anatomy_pathology_guidance, lowpass_filter
from monai_synth.metrics import lesion_in_box_batch


def _ramp(size=16, value=0.0):
    return PreparedImage(torch.full((1, size, size), value), [], "a")


# ------------------------------------------------------------------------------------------------ real CT


def test_ct_slice_matches_pydicom_by_hand(shared_data):
    folder = shared_data / CT_STUDY
    anns = load_voc_annotations(folder / "annotations")
    f = next(p for p in sorted((folder / "dicom").glob("*.dcm")) if pydicom.dcmread(p).SOPInstanceUID == CT_UID_FIRST)
    full = load_ct_slice(f, size=512, window="lung", annotations=anns)
    # independent reference: HU = stored - 1024 (PROVENANCE), lung window L -600 W 1500 -> [-1350, 150] -> [-1, 1]
    hu = pydicom.dcmread(f).pixel_array.astype(np.float32) - 1024.0
    expected = np.clip((hu + 1350.0) / 1500.0, 0, 1) * 2 - 1
    np.testing.assert_allclose(full.image[0].numpy(), expected, atol=1e-4)
    assert full.uid == CT_UID_FIRST and full.boxes == [BoundingBox("A", 278, 308, 360, 394)]
    small = load_ct_slice(f, size=64, window="lung", annotations=anns)
    assert small.image.shape == (1, 64, 64) and small.boxes[0].to_dict() == {
        "label": "A",
        "xmin": 34,
        "ymin": 38,
        "xmax": 45,
        "ymax": 49,
    }
    # the tumour is soft tissue inside dark lung: the box is brighter than the slice on average
    b = small.boxes[0]
    assert small.image[0, b.ymin : b.ymax + 1, b.xmin : b.xmax + 1].mean() > small.image.mean() + 0.3


def test_real_ct_pairs(shared_data):
    data = resolve_guided_data("ct", shared_data / CT_STUDY / "dicom", shared_data / CT_STUDY / "annotations")
    images = load_prepared_images(data, size=32, window="soft_tissue")
    assert len(images) == 16 and len(with_boxes(images)) == 11 and len(without_boxes(images)) == 5
    pairs = build_reference_pairs(anatomy_references(images), with_boxes(images), num_samples=3)
    assert pairs.anatomy.shape == pairs.pathology.shape == pairs.weight.shape == pairs.lesion.shape == (3, 1, 32, 32)


def test_ct_nifti_slices_match_simpleitk_lps(shared_data):
    """A NIfTI CT volume as guided input: its axial slices equal SimpleITK's LPS-oriented array (rows anterior ->
    posterior, columns patient right -> left: the DICOM axial layout), windowed and resized the same way."""
    import SimpleITK as sitk

    from monai_synth.apps.guided import load_ct_volume
    from monai_synth.data.image_io import resize_images
    from monai_synth.transforms import HUWindow

    f = shared_data / "ct_nifti_totalsegmentator_example" / "example_ct.nii.gz"
    slices = load_ct_volume(f, size=32, window="soft_tissue", slice_step=10)
    lps = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(f)), "LPS")).astype(np.float32)  # (z, y, x)
    assert len(slices) == len(range(0, lps.shape[0], 10)) and slices[3].source.endswith("#z=30")
    for k, im in zip(range(0, lps.shape[0], 10), slices):
        win = HUWindow(window="soft_tissue", output_range=(-1.0, 1.0))(torch.from_numpy(lps[k])[None])
        ref = resize_images(torch.as_tensor(win)[None], 32, value_range=(-1.0, 1.0))[0].clamp(-1, 1)
        torch.testing.assert_close(im.image, ref, atol=1e-5, rtol=0)
    data = resolve_guided_data("ct", f.parent, lesion_free=["example_ct.nii.gz"], lesion_free_margin_mm=None)
    assert [p.name for p in data.files] == ["example_ct.nii.gz", "example_ct_sm.nii.gz", "example_seg.nii.gz"]
    with pytest.raises(ValueError, match="slice_step"):
        load_ct_volume(f, slice_step=0)


def test_ct_samples_as_16bit_hu_dicom(tmp_path):
    """dicom_hu_window: each sample also as signed 16-bit HU DICOM with synthetic markers; read back through the
    CT path (ScaleToHU + the same window) it equals the sample up to HU rounding."""
    model, sched = tiny_unet(num_classes=None), DDIMScheduler(num_train_timesteps=20)
    img = torch.full((1, 16, 16), -0.5)
    img[0, 4:12, 4:12] = 0.8
    path = [PreparedImage(img, [BoundingBox("A", 4, 4, 11, 11)], "p")]
    lo, hi = -1350.0, 150.0  # lung window
    jsons = run_guided_sampling(model, sched, [_ramp(16, -0.5)], path, tmp_path / "s", num_samples=2,
                                num_inference_steps=3, positive_fraction=0.5, dicom_hu_window=(lo, hi),
                                class_names=("no_nodule", "nodule"))  # fmt: skip
    rec = json.loads(jsons[0].read_text())
    ds = pydicom.dcmread(tmp_path / "s" / rec["dicom"])
    assert (ds.BitsAllocated, ds.PixelRepresentation, ds.RescaleType, ds.Modality) == (16, 1, "HU", "CT")
    assert ds.ImageComments.startswith("SYNTHETIC") and ds.PatientID.startswith("SYN") and "nodule" in ds.ImageComments
    assert float(ds.WindowCenter) == -600.0 and float(ds.WindowWidth) == 1500.0
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    png = np.asarray(Image.open(tmp_path / "s" / rec["image"]), dtype=np.float64) / 255.0
    np.testing.assert_allclose((hu - lo) / (hi - lo), png, atol=0.5 / 255 + 1 / 1500)  # 8-bit vs 1-HU rounding
    back = load_ct_slice(tmp_path / "s" / rec["dicom"], size=16, window="lung")
    np.testing.assert_allclose((back.image[0].numpy() + 1) / 2, png, atol=0.5 / 255 + 1 / 1500)
    second = pydicom.dcmread(tmp_path / "s" / "sample_0001.dcm")
    assert second.StudyInstanceUID == ds.StudyInstanceUID and second.SeriesInstanceUID != ds.SeriesInstanceUID
    with pytest.raises(ValueError, match="hu_window"):
        run_guided_sampling(model, sched, [_ramp(16, -0.5)], path, tmp_path / "t", num_samples=1,
                            num_inference_steps=2, dicom_hu_window=(150.0, -1350.0))  # fmt: skip


def test_extensionless_dicom_series_is_read(shared_data, tmp_path):
    """PACS exports often have no file suffix: files with the DICOM preamble are found and read like *.dcm."""
    import shutil

    src = sorted((shared_data / CT_STUDY / "dicom").glob("*.dcm"))[:3]
    for i, f in enumerate(src):
        shutil.copy(f, tmp_path / f"IM{i:04d}")
    (tmp_path / "notes.txt").write_text("not an image")
    data = resolve_guided_data("ct", tmp_path, shared_data / CT_STUDY / "annotations")
    assert [p.name for p in data.files] == ["IM0000", "IM0001", "IM0002"]
    images = load_prepared_images(data, size=16)
    direct = [load_ct_slice(f, 16) for f in src]
    assert all(torch.equal(a.image, b.image) for a, b in zip(images, direct))


def test_real_ct_lesion_free_anatomy_by_slice_distance(shared_data):
    """Tumour boxes on slices z = -234 .. -184 mm (1-23 .. 1-13, 5 mm apart): with the default 10 mm margin only
    1-10 (15 mm away), 1-11 and 1-25 (10 mm) are lesion-free; 1-12 and 1-24, next to a boxed slice, are not."""
    d = shared_data / CT_STUDY
    names = lambda ims: sorted(im.source.rsplit("/", 1)[-1] for im in anatomy_references(ims))  # noqa: E731
    default = load_prepared_images(resolve_guided_data("ct", d / "dicom", d / "annotations"), size=16)
    assert names(default) == ["1-10.dcm", "1-11.dcm", "1-25.dcm"]
    far = load_prepared_images(resolve_guided_data("ct", d / "dicom", d / "annotations", lesion_free_margin_mm=12), 16)
    assert names(far) == ["1-10.dcm"]
    listed = resolve_guided_data(
        "ct", d / "dicom", d / "annotations", lesion_free=["1-12.*"], lesion_free_margin_mm=None
    )
    assert names(load_prepared_images(listed, size=16)) == ["1-12.dcm"]
    none = resolve_guided_data("ct", d / "dicom", d / "annotations", lesion_free_margin_mm=None)
    with pytest.raises(ValueError, match="known to be lesion-free.*lesion_free"):
        anatomy_references(load_prepared_images(none, size=16))
    with pytest.raises(ValueError, match="'nothing-\\*.dcm' matches no DICOM file"):
        resolve_guided_data("ct", d / "dicom", d / "annotations", lesion_free=["nothing-*.dcm"])


def test_lesion_in_box_on_real_ct_guided_samples(shared_data, tmp_path):
    """Real tumour patches guided into real lesion-free slices by an untrained denoiser (the guidance alone places
    the lesion): most samples' lesion is in its written box in every mode, and none of the same samples passes
    against the lesion placed one box width away."""
    d = shared_data / CT_STUDY
    images = load_prepared_images(resolve_guided_data("ct", d / "dicom", d / "annotations"), size=32)
    model, sched = tiny_unet(num_classes=None), DDIMScheduler(num_train_timesteps=50)
    anatomy, pathology = anatomy_references(images), with_boxes(images)
    for mode in GUIDANCE_MODES:
        out = tmp_path / mode
        jsons = run_guided_sampling(model, sched, anatomy, pathology, out, num_samples=6, sigma_factor=0.3,
                                    num_inference_steps=8, guidance_mode=mode)  # fmt: skip
        recs = [json.loads(j.read_text()) for j in jsons]
        assert all(r["guidance_mode"] == mode for r in recs)
        summary = json.loads((out / "lesion_in_box.json").read_text())
        assert summary["fraction_inside"] >= 4 / 6 and summary["median_correlation"] >= 0.8, (mode, summary)
        assert summary["fraction_inside"] == np.mean([r["lesion_in_box"]["inside"] for r in recs])
    pairs = build_reference_pairs(anatomy, pathology, 6, sigma_factor=0.3)
    x = guided_sample_pairs(model, sched, pairs, num_inference_steps=8)
    moved, boxes = [], []
    for les, b in zip(pairs.lesion, pairs.boxes):
        dx = b.width if b.xmax + b.width < 32 else -b.width
        moved.append(torch.roll(les, dx, dims=-1))
        boxes.append(BoundingBox(b.label, b.xmin + dx, b.ymin, b.xmax + dx, b.ymax))
    wrong = lesion_in_box_batch(x, pairs.anatomy, torch.stack(moved), boxes)
    assert not any(s.inside for s in wrong)


def test_real_mammogram_crop(shared_data):
    f = shared_data / "mammography_cbis_ddsm" / "sfm-malign-0" / "1-282.dcm"
    im = load_mammogram(f, size=32, boxes={"1-282.dcm": [[100, 2000, 400, 2300]]})
    assert im.image.shape == (1, 32, 32) and len(im.boxes) == 1
    # chest wall on the left after flipping: left half brighter than right half
    assert im.image[0, :, :16].mean() > im.image[0, :, 16:].mean()


# ------------------------------------------------------------------------------------------------ demo data


@pytest.mark.parametrize("kind", ["ct", "mg"])
def test_demo_data_boxes_cover_the_finding(tmp_path, kind):
    from monai_synth.data.demo import make_demo_pair

    dicom_dir, ann_dir = make_demo_guided_data(tmp_path, kind, n_per_class=1, n_pathology=1, size=32, seed=0)
    anns = load_voc_annotations(ann_dir)
    assert len(anns) == 1 and len(list(dicom_dir.glob("*.dcm"))) == 3
    box = next(iter(anns.values())).objects[0]
    normal, finding = make_demo_pair(kind, size=32, seed=1000)
    diff = np.abs(finding.astype(float) - normal.astype(float))
    r, c = np.unravel_index(np.argmax(diff), diff.shape)
    assert box.ymin <= r <= box.ymax and box.xmin <= c <= box.xmax
    images = load_prepared_images(resolve_guided_data(kind, dicom_dir, ann_dir), size=32)
    assert len(with_boxes(images)) == 1


def test_breast_bounding_box_drops_label():
    img = np.zeros((100, 80), np.float32)
    img[10:90, 0:50] = 0.8  # breast at the left edge: rows 10-89, cols 0-49
    img[5:12, 70:78] = 1.0  # film label, separate, smaller and brighter
    img += 0.01 * np.random.default_rng(0).standard_normal(img.shape).astype(np.float32)
    assert breast_bounding_box(img) == (10, 90, 0, 50)
    with pytest.raises(ValueError, match="constant"):
        breast_bounding_box(np.ones((8, 8)))


def test_mammogram_flip_and_box(tmp_path):
    from monai_synth.data.demo import write_demo_dicom

    img = np.full((64, 48), 10, np.uint16)
    img[8:56, 16:48] = 1500  # breast on the right: it gets mirrored to the left
    img[20:28, 30:38] = 4000  # "mass" at rows 20-27, cols 30-37
    f = write_demo_dicom(tmp_path / "m.dcm", img, "mg")
    im = load_mammogram(f, size=48, boxes={"m.dcm": [[30, 20, 37, 27]]})
    # crop rows 8-55 (48) x cols 16-47 (32) -> flipped -> padded to 48 x 48 at column 0 -> identity resize
    assert im.boxes == [BoundingBox("mass", 10, 12, 17, 19)]
    b = im.boxes[0]
    inside = im.image[0, b.ymin : b.ymax + 1, b.xmin : b.xmax + 1]
    assert inside.min() > 0.9 and im.image[0, :, 32:].max() == -1.0  # padding on the right


# ------------------------------------------------------------------------------------------------ conditions


def test_cut_patch_margin_and_clip():
    im = PreparedImage(torch.arange(256.0).reshape(1, 16, 16), [], "x")
    patch, cut = cut_patch(im, BoundingBox("A", 4, 4, 7, 7), margin=0.25)
    assert cut == BoundingBox("A", 3, 3, 8, 8) and torch.equal(patch, im.image[:, 3:9, 3:9])
    _, cut = cut_patch(im, BoundingBox("A", 0, 12, 3, 15), margin=0.5)
    assert cut == BoundingBox("A", 0, 10, 5, 15)


def test_reference_pairs_by_hand():
    anatomy = [_ramp(16, -0.5)]
    path_img = torch.full((1, 16, 16), 0.0)
    path_img[0, 4:8, 6:10] = 0.9
    pathology = [PreparedImage(path_img, [BoundingBox("A", 6, 4, 9, 7)], "p"), _ramp(16, 0.3)]  # 2nd: no box
    pairs = build_reference_pairs(anatomy, pathology, num_samples=2, margin=0.0, paste="replace")
    assert pairs.boxes == [BoundingBox("A", 6, 4, 9, 7)] * 2  # same place, no shift
    w = pairs.weight[0, 0]
    assert (w[4:8, 6:10] > 0).all() and w.sum() == w[4:8, 6:10].sum()  # W zero outside the box (Eq. 5)
    expected = torch.full((16, 16), -0.5)
    expected[4:8, 6:10] = 0.9
    torch.testing.assert_close(pairs.pathology[0, 0], expected)  # patch over the anatomy
    torch.testing.assert_close(pairs.anatomy[1, 0], torch.full((16, 16), -0.5))
    assert pairs.pathology_sources == ["p", "p"]


def test_reference_pairs_with_rotation_swaps_box():
    path_img = torch.zeros(1, 16, 16)
    pathology = [PreparedImage(path_img, [BoundingBox("A", 2, 4, 9, 7)], "p")]  # 8 wide, 4 high
    rot = lambda p, a, s: torch.rot90(p, 1, dims=(-2, -1))  # noqa: E731
    pairs = build_reference_pairs([_ramp()], pathology, 1, patch_transform=rot, margin=0.0)
    b = pairs.boxes[0]
    assert (b.width, b.height) == (4, 8)


def test_reference_pair_errors():
    with pytest.raises(ValueError, match="no pathology reference has a box"):
        build_reference_pairs([_ramp()], [_ramp()], 1)
    with pytest.raises(ValueError, match="anatomy"):
        build_reference_pairs([], [_ramp()], 1)
    with pytest.raises(ValueError, match="num_samples"):
        build_reference_pairs([_ramp()], [_ramp()], 0)


def test_prepare_mammo_patch():
    g = torch.Generator().manual_seed(0)
    patch = torch.rand(1, 9, 9, generator=g) * 2 - 1
    reference = torch.linspace(-1, 1, 256).reshape(1, 16, 16)  # [0, 1] after mapping: min 0, 0.99-quantile 0.99
    out = prepare_mammo_patch(patch, reference, q_range=(0.99, 0.99))
    # equalization keeps the order of the 81 distinct values; normalization puts them on [0, 0.99]
    p01 = ((out + 1) / 2).flatten().sort().values
    assert float(p01[0]) == pytest.approx(0.0, abs=1e-6) and float(p01[-1]) == pytest.approx(0.99, abs=1e-5)
    by_input = out.flatten()[torch.argsort(patch.flatten())]
    assert (by_input[1:] >= by_input[:-1]).all()  # monotone: equalization keeps the order (ties allowed)
    t = mammo_patch_transform(q_range=(0.98, 0.98))
    a, b = t(patch, reference, 3), t(patch, reference, 3)
    assert torch.equal(a, b) and a.shape == (1, 9, 9)


def test_paper_literal_patch_is_gaussian_weighted():
    """paste="gaussian" (seed 001, Fig. 1b): inside the patch y_2 is the patch intensity in [0, 1] times G."""
    anatomy = [_ramp(16, -0.5)]
    img = torch.full((1, 16, 16), 0.5)
    pathology = [PreparedImage(img, [BoundingBox("A", 4, 4, 11, 11)], "p")]
    pairs = build_reference_pairs(anatomy, pathology, 1, margin=0.0, paste="gaussian")
    w = pairs.weight[0]
    expected = torch.where(w > 0, 2.0 * (0.75 * w) - 1.0, torch.full_like(w, -0.5))  # 0.5 in [-1, 1] is 0.75
    torch.testing.assert_close(pairs.pathology[0], expected)
    lesion = torch.where(w > 0, torch.full_like(w, 0.5), torch.full_like(w, -0.5))
    torch.testing.assert_close(pairs.lesion[0], lesion)  # the check's target: the same in every paste mode
    with pytest.raises(ValueError, match="paste"):
        build_reference_pairs(anatomy, pathology, 1, paste="smear")


def test_paper_literal_guidance_leaves_anatomy_unweighted():
    """Eq. 4 as written: x <- x + (phi(y_1) - phi(x)) + W (phi(y_2) - phi(x)); at x_0 (prev_t = -1) the references
    are clean, so with factor 1 the update is x + (y_1 - x) + W (y_2 - x) exactly."""
    g = torch.Generator().manual_seed(0)
    x, y1, y2 = (torch.rand(1, 1, 8, 8, generator=g) for _ in range(3))
    w = torch.rand(1, 1, 8, 8, generator=g)
    sched = DDIMScheduler(num_train_timesteps=10)
    literal = anatomy_pathology_guidance(y1, y2, w, 1, 1, anatomy_weighting="none")
    torch.testing.assert_close(literal(x, 0, -1, sched), x + (y1 - x) + w * (y2 - x))
    blend = anatomy_pathology_guidance(y1, y2, w, 1, 1)
    torch.testing.assert_close(blend(x, 0, -1, sched), x + (1 - w) * (y1 - x) + w * (y2 - x))
    with pytest.raises(ValueError, match="anatomy_weighting"):
        anatomy_pathology_guidance(y1, y2, w, anatomy_weighting="half")


def test_paper_literal_mode_and_errors(tmp_path):
    assert GUIDANCE_MODES["paper_literal"] == ("gaussian", "none") and GUIDANCE_MODES["blend"][1] == "complement"
    with pytest.raises(ValueError, match="guidance_mode"):
        run_guided_sampling(tiny_unet(num_classes=None), DDIMScheduler(10), [_ramp()],
                            [PreparedImage(torch.zeros(1, 16, 16), [BoundingBox("A", 2, 2, 5, 5)], "p")],
                            tmp_path, guidance_mode="literal")  # fmt: skip
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_demo_anatomy_references_are_the_normal_class(tmp_path):
    """The demo's finding class has lesions without boxes: never an anatomy reference."""
    data = resolve_guided_data("mg", demo_dir=tmp_path / "demo", size=32, n_per_class=3)
    images = load_prepared_images(data, size=32)
    listing = json.loads((tmp_path / "demo" / "dicom" / "datalist.json").read_text())
    labels = {it["image"].rsplit("/", 1)[-1]: it["label"] for k in ("training", "validation", "test")
              for it in listing[k]}  # fmt: skip
    refs = anatomy_references(images)
    assert sorted(im.source.rsplit("/", 1)[-1] for im in refs) == sorted(n for n, v in labels.items() if v == 0)
    assert len(refs) >= 2 and len(without_boxes(images)) > len(refs)  # finding class: no box, not lesion-free
    assert all(im.label == 1 for im in without_boxes(images) if not im.lesion_free)


def test_edge_blend_fades_patch_into_anatomy():
    anatomy = [_ramp(16, -0.5)]
    img = torch.full((1, 16, 16), 0.5)
    pairs = build_reference_pairs(anatomy, [PreparedImage(img, [BoundingBox("A", 4, 4, 11, 11)], "p")], 1, margin=0.0)
    w = pairs.weight[0]
    # y_2 = y_1 + G (patch - y_1), G = W: closed form
    torch.testing.assert_close(pairs.pathology[0], -0.5 + w * (0.5 - -0.5))


# ------------------------------------------------------------------------------------------------ sampling


def _lesion_pairs(n: int = 3):
    anat = [_ramp(16, -0.5)]
    img = torch.full((1, 16, 16), -0.5)
    img[0, 4:12, 4:12] = 0.8
    path = [PreparedImage(img, [BoundingBox("A", 4, 4, 11, 11)], "p")]
    return build_reference_pairs(anat, path, num_samples=n, margin=0.0)


def test_latent_guided_sample_pairs_place_the_lesion_and_pass_class_labels():
    """With an identity first stage the latent path (conditions on the decoded clean prediction) must put the
    lesion where pixel guidance puts it; the class labels reach the conditional model unchanged."""
    model, seen = tiny_unet(num_classes=2), []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["class_labels"].tolist()), with_kwargs=True)
    pairs, labels = _lesion_pairs(), torch.tensor([1, 1, 0])
    opts = dict(anatomy_factor=2, pathology_factor=2, num_inference_steps=10, seed=1, class_labels=labels)
    x = guided_sample_pairs(model, DDIMScheduler(num_train_timesteps=50), pairs, autoencoder=IdentityCodec(), **opts)
    assert x.shape == (3, 1, 16, 16) and seen and all(s == [1, 1, 0] for s in seen)
    pixel = guided_sample_pairs(model, DDIMScheduler(num_train_timesteps=50), pairs, **opts)  # the validated path

    def low_corr(images):  # per-sample correlation of the low frequencies with the pasted-lesion target
        a, b = lowpass_filter(images, 2).flatten(1), lowpass_filter(pairs.lesion, 2).flatten(1)
        return torch.stack([torch.corrcoef(torch.stack([u, v]))[0, 1] for u, v in zip(a, b)])

    torch.testing.assert_close(low_corr(x), low_corr(pixel), atol=0.05, rtol=0.0)
    assert (x[:, 0, 6:10, 6:10].mean(dim=(1, 2)) > x[:, 0, :, :3].mean(dim=(1, 2)) + 0.3).all()  # lesion brighter
    with pytest.raises(ValueError, match="`class_labels` has 2 entries for 3 reference pairs"):
        guided_sample_pairs(model, DDIMScheduler(num_train_timesteps=50), pairs, class_labels=torch.tensor([1, 0]))


def test_latent_guided_sampling_decodes_to_image_size(tmp_path):
    """A real (tiny, untrained) AutoencoderKL: noise is drawn at the latent shape of the references, samples are
    decoded to the image size; run_guided_sampling labels lesion samples 1 and anatomy-only ones 0."""
    from monai_synth.networks import build_autoencoder

    torch.manual_seed(0)
    ae = build_autoencoder(channels=(8, 8), latent_channels=2, norm_num_groups=4).eval()
    model, seen = tiny_unet(num_classes=2, in_channels=2), []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(tuple(a[0].shape)), with_kwargs=True)
    anat = [_ramp(16, -0.5)]
    path = [PreparedImage(_lesion_pairs(1).lesion[0], [BoundingBox("A", 4, 4, 11, 11)], "p")]
    jsons = run_guided_sampling(
        model, DDIMScheduler(num_train_timesteps=50), anat, path, tmp_path, num_samples=4,
        positive_fraction=0.5, num_inference_steps=3, autoencoder=ae, scale_factor=1.5,
    )  # fmt: skip
    assert set(seen) == {(4, 2, 8, 8)}  # factor-2 latents, one batch
    assert [json.loads(j.read_text())["label"] for j in jsons] == [1, 1, 0, 0]
    assert Image.open(tmp_path / "sample_0000.png").size == (16, 16)
    with pytest.raises(ValueError, match="guided sampling needs labels 0/1"):
        run_guided_sampling(tiny_unet(num_classes=0), DDIMScheduler(num_train_timesteps=50), anat, path, tmp_path / "x")


def test_guided_sample_pairs_and_outputs(tmp_path):
    model = tiny_unet(num_classes=None)
    sched = DDIMScheduler(num_train_timesteps=50)
    anat = [_ramp(16, -0.5)]
    img = torch.full((1, 16, 16), -0.5)
    img[0, 4:12, 4:12] = 0.8
    path = [PreparedImage(img, [BoundingBox("A", 4, 4, 11, 11)], "p")]
    pairs = build_reference_pairs(anat, path, num_samples=3, margin=0.0)
    a = guided_sample_pairs(
        model, sched, pairs, anatomy_factor=2, pathology_factor=2, batch_size=2, num_inference_steps=10, seed=1
    )
    b = guided_sample_pairs(
        model, sched, pairs, anatomy_factor=2, pathology_factor=2, batch_size=2, num_inference_steps=10, seed=1
    )
    assert a.shape == (3, 1, 16, 16) and torch.equal(a, b)
    # lesion brighter than the anatomy background in every sample
    assert (a[:, 0, 6:10, 6:10].mean(dim=(1, 2)) > a[:, 0, :, :3].mean(dim=(1, 2)) + 0.5).all()
    plain = run_guided_sampling(model, sched, anat, path, tmp_path / "plain", num_samples=2, num_inference_steps=5)
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == sorted(
        [f"sample_000{i}{s}" for i in range(2) for s in (".png", ".json", "_mask.png")]
        + ["datalist.json", "lesion_in_box.json", "privacy_report.json"]
    )  # by default no real pixels: samples, masks, sidecars and the privacy report only
    report = json.loads((tmp_path / "plain" / "privacy_report.json").read_text())
    assert report["checked"] is False and "patient-derived by design" in report["warning"]
    assert not (tmp_path / "plain_REAL_references").exists() and len(plain) == 2
    with pytest.raises(FileNotFoundError, match="write_references"):
        save_montage(tmp_path / "plain", tmp_path / "m0.png")
    out = tmp_path / "samples"
    jsons = run_guided_sampling(
        model, sched, anat, path, out, num_samples=2, num_inference_steps=5, write_references=True
    )
    rec = json.loads(jsons[1].read_text())
    assert rec["boxes"] == [{"label": "A", "xmin": 4, "ymin": 4, "xmax": 11, "ymax": 11}]
    assert rec["pathology_reference"] == reference_id("p") and rec["pathology_reference"].startswith("ref-")
    assert rec["patient_derived"] is True and not list(out.glob("anatomy_*"))
    refs = tmp_path / "samples_REAL_references"
    assert (refs / "anatomy_0001.png").is_file() and (refs / "anatomy_0001.png").stat().st_mode & 0o077 == 0
    ids = (refs / "reference_ids.csv").read_text().splitlines()
    assert (
        ids[0] == "id,file"
        and f"{reference_id('p')},p" in ids
        and (refs / "reference_ids.csv").stat().st_mode & 0o077 == 0
    )
    with pytest.raises(ValueError, match="reference_dir"):
        run_guided_sampling(
            model,
            sched,
            anat,
            path,
            out,
            num_samples=1,
            num_inference_steps=2,
            write_references=True,
            reference_dir=out,
        )
    montage = np.asarray(Image.open(save_montage(out, refs.parent / "m.png", num_rows=2, scale=3)))
    assert montage.shape == (2 * 48 + 2, 5 * 48 + 4 * 2, 3)
    # last tile: red box outline at rows/cols 4*3 .. 12*3-1 of the first sample
    assert tuple(montage[12, 4 * 50 + 12]) == (255, 0, 0) and tuple(montage[35, 4 * 50 + 35]) == (255, 0, 0)
    w = np.asarray(Image.open(refs / "weight_0000.png"))
    assert w[0, 0] == 0 and w[7, 7] > 200  # W: 0 outside the lesion box, near 1 at its centre


def test_write_annotated_samples(tmp_path):
    images = torch.stack([torch.full((1, 8, 8), -1.0), torch.full((1, 8, 8), 1.0)])
    boxes = [BoundingBox("A", 1, 2, 3, 4), BoundingBox("B", 0, 0, 7, 7)]
    paths = write_annotated_samples(images, boxes, tmp_path, extra=[{"k": 1}, {"k": 2}])
    rec = json.loads(paths[0].read_text())
    assert rec == {
        "image": "sample_0000.png",
        "mask": "sample_0000_mask.png",
        "size": [8, 8],
        "boxes": [{"label": "A", "xmin": 1, "ymin": 2, "xmax": 3, "ymax": 4}],
        "k": 1,
    }
    assert np.asarray(Image.open(tmp_path / "sample_0000.png")).max() == 0
    assert np.asarray(Image.open(tmp_path / "sample_0001.png")).min() == 255
    mask = np.asarray(Image.open(tmp_path / "sample_0000_mask.png"))
    expected = np.zeros((8, 8), np.uint8)
    expected[2:5, 1:4] = 255
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(ValueError, match="entries"):
        write_annotated_samples(images, boxes[:1], tmp_path)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        pytest.param({"kind": "xr"}, "kind", id="kind"),
        pytest.param({"kind": "ct"}, "demo_dir", id="no_source"),
        pytest.param({"kind": "ct", "dicom_dir": "/nonexistent/x"}, "does not exist", id="missing"),
    ],
)
def test_resolve_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_guided_data(**kwargs)


def test_guided_sampler_runs_run_guided_sampling(tmp_path):
    """The bundles' config component: calling it equals run_guided_sampling with the same arguments."""
    model, sched = tiny_unet(num_classes=None), DDIMScheduler(num_train_timesteps=50)
    anat = [_ramp(16, -0.5)]
    img = torch.full((1, 16, 16), -0.5)
    img[0, 4:12, 4:12] = 0.8
    path = [PreparedImage(img, [BoundingBox("A", 4, 4, 11, 11)], "p")]
    options = dict(num_samples=2, num_inference_steps=3)
    sampler = GuidedSampler(model, sched, anat, path, tmp_path / "a", **options)
    jsons = sampler()
    direct = run_guided_sampling(model, sched, anat, path, tmp_path / "b", **options)
    assert [p.name for p in jsons] == [p.name for p in direct] and len(jsons) == 2
    assert all(p.parent == tmp_path / "a" for p in jsons)
    for a, b in zip(jsons, direct):
        assert json.loads(a.read_text()) == json.loads(b.read_text())
        np.testing.assert_array_equal(np.asarray(Image.open(a.with_suffix(".png"))),
                                      np.asarray(Image.open(b.with_suffix(".png"))))  # fmt: skip


def test_sampling_weights_need_a_checkpoint(tmp_path):
    """The guided bundles load their network with the one weights loader (was ``load_trained_network``)."""
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_weights_for_sampling(tiny_unet(num_classes=None), tmp_path)
