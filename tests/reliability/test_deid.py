"""DICOM PS3.15 Basic Profile checker, and the synthetic outputs of the pipeline checked against filled real inputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from helpers import CT_SLICE, copy_shared, tiny_unet
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from monai_synth.data.deid import PS315_BASIC_PROFILE, Violation, check_deidentified, profile_tags
from monai_synth.data.writers import write_synthetic_dicom

ACTIONS = {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
PATIENT_ID = "RELI-PAT-0042"


# ------------------------------------------------------------------------------------------------ table
def test_profile_table_is_the_whole_standard_table():
    """The whole Table E.1-1 of the cited edition (issue 13 named rows our hand-written subset lacked)."""
    from monai_synth.data.deid import PROFILE_EDITION, profile_row

    assert len(PS315_BASIC_PROFILE) >= 600 and "PS3.15" in PROFILE_EDITION and "2026" in PROFILE_EDITION
    tags = [(r.tag, r.mask) for r in PS315_BASIC_PROFILE]
    assert len(set(tags)) == len(tags), "duplicate rows"
    for row in PS315_BASIC_PROFILE:
        assert row.action in ACTIONS, row
        known = keyword_for_tag((row.tag[0] << 16) | row.tag[1])
        if known and row.mask is None:
            assert known == row.keyword, row
    keywords = {r.keyword for r in PS315_BASIC_PROFILE}
    for kw in ("SourceImageSequence", "IconImageSequence", "ReferencedPatientPhotoSequence", "ConsultingPhysicianName",
               "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
               "PerformingPhysicianIdentificationSequence", "OperatorIdentificationSequence",
               "ReferringPhysicianIdentificationSequence"):  # fmt: skip
        assert kw in keywords, kw
    for tag in (0x60003000, 0x60023000, 0x601E4000, 0x50000000):  # overlay data / comments, curve data: 60xx, 50xx
        assert profile_row(tag) is not None and profile_row(tag).mask is not None, hex(tag)
    assert profile_row(0x60003001) is None and profile_row(0x00280010) is None  # not in the table: Rows


@pytest.mark.parametrize(
    "keyword,action",
    [
        ("PatientName", "Z"), ("PatientID", "Z/D"), ("PatientBirthDate", "Z"), ("PatientSex", "Z"),
        ("PatientAge", "X"), ("OtherPatientIDs", "X"), ("AccessionNumber", "Z"), ("StudyDate", "Z"),
        ("StudyTime", "Z"), ("StudyID", "Z"), ("ReferringPhysicianName", "Z"), ("InstitutionName", "X/Z/D"),
        ("InstitutionAddress", "X"), ("OperatorsName", "X/Z/D"), ("PerformingPhysicianName", "X"),
        ("DeviceSerialNumber", "X/Z/D"), ("StudyInstanceUID", "U"), ("SeriesInstanceUID", "U"),
        ("SOPInstanceUID", "U"), ("FrameOfReferenceUID", "U"),
    ],
)  # fmt: skip
def test_profile_rows_follow_table_e11(keyword, action):
    rows = {r.keyword: r.action for r in PS315_BASIC_PROFILE}
    assert rows[keyword] == action


# ------------------------------------------------------------------------------------------------ filled inputs
def _value_for(vr: str, k: int):
    """A VR-conformant, distinctive value for the ``k``-th profile attribute."""
    if vr == "PN":
        return f"Doe{k}^Jane"
    if vr == "DA":
        return f"1999{k % 12 + 1:02d}{k % 28 + 1:02d}"
    if vr == "TM":
        return f"10{k % 60:02d}07"
    if vr == "DT":
        return f"1999{k % 12 + 1:02d}{k % 28 + 1:02d}101007"
    if vr == "AS":
        return "042Y"
    if vr in ("DS", "FD", "FL"):
        return 70.5 + k if vr != "DS" else f"{70.5 + k}"
    if vr in ("IS",):
        return str(1000 + k)
    if vr in ("US", "SS", "UL", "SL"):
        return 3
    if vr == "CS":
        return f"CODE{k}"
    if vr in ("SH", "AE"):
        return f"ID{k:03d}-{PATIENT_ID[-4:]}"
    if vr == "UI":
        return generate_uid()
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        raw = f"{PATIENT_ID} attr{k}".encode()
        return raw + b" " * (len(raw) % 2)
    if vr in ("SV", "UV"):
        return 3
    if vr == "AT":
        return 0x00100020
    return f"{PATIENT_ID} attr{k} St Elsewhere Hospital"  # LO, LT, ST, UT, UC, UN ...


def fill_profile(ds: Dataset) -> Dataset:
    """Set every attribute of the profile table on ``ds`` (sequences get one item with identifying content; tags
    not in pydicom's dictionary are skipped; for repeating groups the first group, e.g. overlay 6000)."""
    for k, row in enumerate(PS315_BASIC_PROFILE):
        tag = (row.tag[0] << 16) | row.tag[1]
        if row.tag[0] in (0x0000, 0x0002) or (row.mask is not None and row.tag[0] == 0x5000):  # command, meta, curve
            continue
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue
        if vr == "SQ":
            item = Dataset()
            item.ReferencedSOPClassUID = ds.SOPClassUID
            item.ReferencedSOPInstanceUID = generate_uid()
            item.CodeMeaning = f"{PATIENT_ID} item {k}"
            ds.add_new(tag, "SQ", DicomSequence([item]))
        else:
            ds.add_new(tag, vr, _value_for(vr, k))
    ds.PatientName = "Roe^Richard^Q"
    ds.PatientID = PATIENT_ID
    ds.PatientSex = "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


@pytest.fixture(scope="module")
def filled_inputs(shared_data, tmp_path_factory) -> list[Path]:
    """Two CT slices with every profile attribute filled, in a folder named after the patient (as TCIA does)."""
    root = tmp_path_factory.mktemp("filled") / PATIENT_ID
    out = []
    for i in range(2):
        p = copy_shared(shared_data, CT_SLICE, root)
        p = p.rename(root / f"slice{i}.dcm")
        ds = fill_profile(pydicom.dcmread(p))
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * i]
        ds.save_as(p)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def sources(filled_inputs) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in filled_inputs]


def _clean_synthetic(tmp_path: Path) -> Dataset:
    p = write_synthetic_dicom(np.full((1, 8, 8), 0.5), tmp_path / "syn.dcm", generate_uid(), generate_uid(), 1, "x")
    return pydicom.dcmread(p)


# ------------------------------------------------------------------------------------------------ checker
def test_source_checked_against_itself_violates_everything(sources):
    v = check_deidentified(sources[0], sources)
    kinds = {x.kind for x in v}
    assert {"source_value", "reused_uid", "private_tag", "missing_marker"} <= kinds
    flagged = {x.tag for x in v if x.kind == "source_value"}
    # every non-sequence, non-UID profile attribute set by fill_profile is reported (overlay 60xx included)
    expected = set()
    for r in PS315_BASIC_PROFILE:
        tag = (r.tag[0] << 16) | r.tag[1]
        if r.tag[0] in (0x0000, 0x0002) or (r.mask is not None and r.tag[0] == 0x5000):
            continue
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue
        if vr not in ("SQ", "UI"):
            expected.add(tag)
    assert 0x60003000 in expected and len(expected) > 400
    assert expected <= flagged, sorted(hex(t) for t in expected - flagged)
    reused = {x.keyword for x in v if x.kind == "reused_uid"}
    assert {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"} <= reused
    assert "ReferencedSOPInstanceUID" in reused  # nested in a sequence
    assert "MediaStorageSOPInstanceUID" in reused  # file meta


def test_clean_writer_output_passes(sources, tmp_path):
    assert check_deidentified(_clean_synthetic(tmp_path), sources) == []


def _plant_name(ds, src):
    ds.PatientName = src.PatientName


def _plant_birthdate(ds, src):
    ds.PatientBirthDate = src.PatientBirthDate


def _plant_institution(ds, src):
    ds.InstitutionName = src.InstitutionName


def _plant_id_in_description(ds, src):
    ds.SeriesDescription = f"synthetic from {src.PatientID}"


def _plant_study_uid(ds, src):
    ds.StudyInstanceUID = src.StudyInstanceUID


def _plant_nested_uid(ds, src):
    item = Dataset()
    item.ReferencedSOPClassUID = src.SOPClassUID
    item.ReferencedSOPInstanceUID = src.SOPInstanceUID
    ds.SourceImageSequence = DicomSequence([item])


def _plant_private(ds, src):
    block = ds.private_block(0x0009, "RELI TEST", create=True)
    block.add_new(0x01, "LO", "anything")


def _drop(keyword):
    def f(ds, src):
        delattr(ds, keyword)

    f.__name__ = f"drop_{keyword}"
    return f


def _set(keyword, value):
    def f(ds, src):
        setattr(ds, keyword, value)

    return f


PLANTS = [
    pytest.param(_plant_name, "source_value", "PatientName", id="patient_name"),
    pytest.param(_plant_birthdate, "source_value", "PatientBirthDate", id="birth_date"),
    pytest.param(_plant_institution, "source_value", "InstitutionName", id="institution"),
    pytest.param(_plant_id_in_description, "source_value_elsewhere", "SeriesDescription", id="id_in_free_text"),
    pytest.param(_plant_study_uid, "reused_uid", "StudyInstanceUID", id="study_uid"),
    pytest.param(_plant_nested_uid, "reused_uid", "ReferencedSOPInstanceUID", id="nested_sop_uid"),
    pytest.param(_plant_private, "private_tag", "(0009,1001)", id="private_tag"),
    pytest.param(_set("ImageType", ["ORIGINAL", "PRIMARY"]), "missing_marker", "ImageType", id="not_derived"),
    pytest.param(_set("PatientIdentityRemoved", "NO"), "missing_marker", "PatientIdentityRemoved", id="identity"),
    pytest.param(_drop("DeidentificationMethod"), "missing_marker", "DeidentificationMethod", id="no_method"),
    pytest.param(_drop("BurnedInAnnotation"), "missing_marker", "BurnedInAnnotation", id="no_burned_in"),
    pytest.param(_drop("SeriesInstanceUID"), "missing_uid", "SeriesInstanceUID", id="no_series_uid"),
]


@pytest.mark.parametrize("plant,kind,keyword", PLANTS)
def test_each_planted_leak_is_the_only_violation(plant, kind, keyword, sources, tmp_path):
    ds = _clean_synthetic(tmp_path)
    plant(ds, sources[1])
    v = check_deidentified(ds, sources)
    assert [(x.kind, x.keyword) for x in v] == [(kind, keyword)], [str(x) for x in v]
    assert isinstance(v[0], Violation) and keyword.split("(")[-1].rstrip(")") in str(v[0]) or kind == "private_tag"


def test_private_tags_can_be_allowed(sources, tmp_path):
    ds = _clean_synthetic(tmp_path)
    _plant_private(ds, sources[0])
    assert check_deidentified(ds, sources, check_private=False) == []


def test_profile_tags_filter():
    uids = profile_tags({"U"})
    assert all(r.action == "U" for r in uids.values()) and 0x0020000D in uids and 0x00100010 not in uids


# ------------------------------------------------------------------------------------------------ pipeline outputs
def test_generate_dataset_dicom_outputs_carry_nothing_from_filled_inputs(filled_inputs, sources, tmp_path):
    """Inputs with every profile attribute filled -> read by the pipeline's loader -> generate_dataset DICOM outputs:
    no input value, new Study/Series/SOP UIDs, marked derived and de-identified."""
    from monai_synth.apps.guided import load_ct_slice
    from monai_synth.engines.diffusion import build_scheduler
    from monai_synth.engines.generate import generate_dataset

    refs = [load_ct_slice(p, size=8) for p in filled_inputs]  # what training would consume
    assert all(r.image.shape == (1, 8, 8) for r in refs)
    res = generate_dataset(
        tiny_unet(), build_scheduler("ddim", num_train_timesteps=10), tmp_path / "gen", num_per_class=2,
        num_classes=2, image_size=8, formats=("dicom",), num_inference_steps=2, batch_size=4, progress=False,
    )  # fmt: skip
    outputs = sorted((tmp_path / "gen").rglob("*.dcm"))
    assert len(outputs) == 4 and res.written == 4
    for p in outputs:
        ds = pydicom.dcmread(p)
        assert check_deidentified(ds, sources) == [], p
    texts = "\n".join(p.read_text() for p in (tmp_path / "gen").rglob("*.json"))
    assert PATIENT_ID not in texts and str(sources[0].StudyInstanceUID) not in texts


@pytest.fixture
def guided_outputs(filled_inputs, tmp_path) -> tuple[Path, list]:
    """Guided (seed 001) outputs made from the filled CT inputs with a tiny untrained model."""
    from monai_synth.apps.guided import load_ct_slice, run_guided_sampling
    from monai_synth.data.annotations import BoundingBox
    from monai_synth.engines.diffusion import build_scheduler

    refs = [load_ct_slice(p, size=16) for p in filled_inputs]
    refs[1].boxes = [BoundingBox("A", 4, 4, 10, 10)]
    run_guided_sampling(
        tiny_unet(num_classes=None), build_scheduler("ddim", num_train_timesteps=10), [refs[0]], [refs[1]],
        tmp_path / "guided", num_samples=2, num_inference_steps=2, write_references=False,
    )  # fmt: skip
    return tmp_path / "guided", refs


def test_guided_sidecars_hold_no_identifiers(guided_outputs, sources):
    """The sidecars used to hold the full reference paths (a folder named after the patient leaked the PatientID)."""
    out, _ = guided_outputs
    leaks = []
    for p in sorted(out.rglob("*.json")):
        text = json.dumps(json.loads(p.read_text()))
        leaks += [f"{p.name}: {s}" for s in (PATIENT_ID, str(sources[0].SOPInstanceUID)) if s in text]
    assert not leaks, leaks


def test_guided_samples_are_not_copies_of_the_references(guided_outputs):
    from PIL import Image

    from monai_synth.engines.privacy import build_near_copy_filter

    out, refs = guided_outputs
    samples = [np.asarray(Image.open(p)) for p in sorted(out.glob("sample_*[0-9].png"))]
    assert len(samples) == 2
    real = torch.stack([(r.image + 1) / 2 for r in refs]).clamp(0, 1)
    filt = build_near_copy_filter(real, threshold=0.99)
    assert not filt.check(np.stack(samples)[:, None])[0].any()
    # the same check does catch a reference written as an output (write_references=True would do that)
    copy_of_ref = np.round(real[:1].numpy() * 255).astype(np.uint8)
    assert filt.check(copy_of_ref)[0].tolist() == [True]


def test_checker_does_not_mutate_inputs(sources, tmp_path):
    before = copy.deepcopy(sources[0])
    check_deidentified(_clean_synthetic(tmp_path), sources)
    assert sources[0] == before


# ------------------------------------------------------------------------------------------------ issue 13
def test_numeric_identifiers_copied_elsewhere_are_found(sources, tmp_path):
    """Digit-only identifiers (many hospitals' PatientIDs) used to be skipped by the cross-attribute match."""
    src = copy.deepcopy(sources[0])
    src.PatientID = "20481234"
    ds = _clean_synthetic(tmp_path)
    ds.SeriesDescription = "SYNTHETIC from 20481234"
    v = check_deidentified(ds, [src])
    assert [(x.kind, x.keyword, x.value) for x in v] == [("source_value_elsewhere", "SeriesDescription", "20481234")]


def _generate_dicom(out, **kw):
    from monai_synth.engines import build_scheduler, generate_dataset

    return generate_dataset(
        tiny_unet(), build_scheduler("ddim", num_train_timesteps=10), out, num_per_class=1, num_classes=2,
        image_size=8, formats=("dicom",), num_inference_steps=2, progress=False, **kw,
    )  # fmt: skip


def test_each_run_is_its_own_pseudonymous_patient_under_the_uid_root(tmp_path):
    root = "1.2.826.0.1.3680043.10.543."
    _generate_dicom(tmp_path / "a", uid_root=root)
    _generate_dicom(tmp_path / "b")
    a = [pydicom.dcmread(p) for p in sorted((tmp_path / "a").rglob("*.dcm"))]
    b = [pydicom.dcmread(p) for p in sorted((tmp_path / "b").rglob("*.dcm"))]
    ids_a, ids_b = {d.PatientID for d in a}, {d.PatientID for d in b}
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b and ids_a != {"SYNTHETIC"}
    pid = next(iter(ids_a))
    assert pid.startswith("SYN") and str(a[0].PatientName) == f"SYNTHETIC^{pid}"
    assert len({d.StudyInstanceUID for d in a}) == 1 and {d.StudyInstanceUID for d in a} != {
        d.StudyInstanceUID for d in b
    }
    for d in a:  # every UID under the configured root, markers a PACS user sees
        assert all(str(u).startswith(root) for u in (d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID))
        assert str(d.ImageComments).startswith("SYNTHETIC") and str(d.SeriesDescription).startswith("SYNTHETIC")
        assert d.PatientIdentityRemoved == "YES" and "SYNTHETIC" in str(d.DeidentificationMethod)
    uids = json.loads((tmp_path / "a" / "dicom_uids.json").read_text())
    assert uids["patient_id"] == pid and uids["uid_root"] == root
    (tmp_path / "a" / "dicom" / "class_0" / "synth_000000.dcm").unlink()
    _generate_dicom(tmp_path / "a", uid_root=root)  # a resume keeps the run's patient and study
    again = pydicom.dcmread(tmp_path / "a" / "dicom" / "class_0" / "synth_000000.dcm")
    assert again.PatientID == pid and again.StudyInstanceUID == a[0].StudyInstanceUID


@pytest.mark.parametrize("root", ["1.2.3", "1.02.3.", "abc.", "1." * 30])
def test_a_bad_uid_root_is_refused_before_anything_is_written(tmp_path, root):
    with pytest.raises(ValueError, match="uid_root"):
        _generate_dicom(tmp_path / "x", uid_root=root)
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").rglob("*"))


def test_burned_in_annotation_inputs_are_excluded_with_a_warning(filled_inputs, tmp_path, caplog):
    import logging

    from monai_synth.apps.guided import list_dicom_files
    from monai_synth.data import dicom_folder_datalist

    folder = tmp_path / "refs"
    folder.mkdir()
    for i, src in enumerate(filled_inputs):
        ds = pydicom.dcmread(src)
        ds.BurnedInAnnotation = "YES" if i == 0 else "NO"
        ds.save_as(folder / f"s{i}.dcm")
    with caplog.at_level(logging.WARNING):
        assert [p.name for p in list_dicom_files(folder)] == ["s1.dcm"]
    assert "BurnedInAnnotation=YES" in caplog.text and "s0.dcm" in caplog.text
    (tmp_path / "labels.csv").write_text("id,label\ns0,0\ns1,1\n")
    dl = dicom_folder_datalist(folder, tmp_path / "labels.csv")
    assert [it["id"] for it in dl.items] == ["s1"]
    ds = pydicom.dcmread(folder / "s1.dcm")
    ds.BurnedInAnnotation = "YES"
    ds.save_as(folder / "s1.dcm")
    with pytest.raises(ValueError, match="BurnedInAnnotation"):
        list_dicom_files(folder)
