"""Tests for the PASCAL-VOC box reader (TCIA Lung-PET-CT-Dx annotations)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from helpers import CT_STUDY, CT_UID_FIRST

from monai_synth.data.annotations import (
    BoundingBox,
    boxes_to_mask,
    load_voc_annotations,
    read_voc_xml,
    scale_box,
)

VOC_TWO_OBJECTS = """<annotation><size><width>64</width><height>32</height><depth>1</depth></size>
<object><name>A</name><truncated>1</truncated><Difficult>0</Difficult>
<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>5</ymax></bndbox></object>
<object><name>B</name><bndbox><xmin>10.0</xmin><ymin>0</ymin><xmax>10</xmax><ymax>0</ymax></bndbox></object>
</annotation>"""


def test_shared_xml_box_by_hand(shared_data):
    # values read by eye from the file: <xmin>278</xmin><ymin>308</ymin><xmax>360</xmax><ymax>394</ymax>
    ann = read_voc_xml(shared_data / CT_STUDY / "annotations" / f"{CT_UID_FIRST}.xml")
    assert (ann.width, ann.height, ann.depth) == (512, 512, 1)
    assert ann.objects == [BoundingBox("A", 278, 308, 360, 394, difficult=False, truncated=False)]
    box = ann.objects[0]
    assert (box.width, box.height, box.center) == (83, 87, (351.0, 319.0))


def test_shared_folder_keys_are_slice_uids(shared_data):
    folder = shared_data / CT_STUDY
    anns = load_voc_annotations(folder / "annotations")
    assert len(anns) == 11 and CT_UID_FIRST in anns
    uid_to_instance = {}
    for f in sorted((folder / "dicom").glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        uid_to_instance[str(ds.SOPInstanceUID)] = int(ds.InstanceNumber)
    # PROVENANCE: the 11 annotated slices are InstanceNumber 13-23
    assert sorted(uid_to_instance[k] for k in anns) == list(range(13, 24))
    assert all(len(a.objects) == 1 and a.objects[0].label == "A" for a in anns.values())


def test_synthetic_file_two_objects(tmp_path):
    p = tmp_path / "x.xml"
    p.write_text(VOC_TWO_OBJECTS)
    ann = read_voc_xml(p)
    assert (ann.width, ann.height) == (64, 32)
    assert ann.objects[0] == BoundingBox("A", 1, 2, 3, 5, difficult=False, truncated=True)
    assert ann.objects[1] == BoundingBox("B", 10, 0, 10, 0)
    mask = boxes_to_mask(ann.objects, (32, 64))
    expected = np.zeros((32, 64), np.uint8)
    expected[2:6, 1:4] = 1
    expected[0, 10] = 1
    np.testing.assert_array_equal(mask, expected)
    assert int(mask.sum()) == 4 * 3 + 1


@pytest.mark.parametrize(
    "box,from_size,to_size,expected",
    [
        pytest.param(BoundingBox("A", 0, 0, 511, 511), (512, 512), (64, 64), (0, 0, 63, 63), id="full"),
        pytest.param(BoundingBox("A", 278, 308, 360, 394), (512, 512), (64, 64), (34, 38, 45, 49), id="ct_box"),
        pytest.param(BoundingBox("A", 8, 8, 15, 15), (32, 32), (16, 16), (4, 4, 7, 7), id="exact_half"),
        pytest.param(BoundingBox("A", 1, 1, 1, 1), (4, 4), (8, 8), (2, 2, 3, 3), id="upscale"),
    ],
)
def test_scale_box(box, from_size, to_size, expected):
    # ct_box by hand: 278/8=34.75->34, 308/8=38.5->38, 361/8=45.125->ceil 46 -1=45, 395/8=49.375->50-1=49
    b = scale_box(box, from_size, to_size)
    assert (b.xmin, b.ymin, b.xmax, b.ymax) == expected


@pytest.mark.parametrize(
    "text,match",
    [
        pytest.param("<annotation><object><name>A</name></object></annotation>", "without <bndbox>", id="no_box"),
        pytest.param("<foo/>", "root element", id="wrong_root"),
        pytest.param("<annotation>", "not valid XML", id="broken"),
        pytest.param(
            "<annotation><object><bndbox><xmin>5</xmin><ymin>0</ymin><xmax>1</xmax><ymax>1</ymax></bndbox>"
            "</object></annotation>", "min > max", id="inverted"),
        pytest.param(
            "<annotation><object><bndbox><xmin>a</xmin><ymin>0</ymin><xmax>1</xmax><ymax>1</ymax></bndbox>"
            "</object></annotation>", "not a number", id="nan"),
        pytest.param(
            "<annotation><object><bndbox><ymin>0</ymin><xmax>1</xmax><ymax>1</ymax></bndbox>"
            "</object></annotation>", "missing <xmin>", id="missing"),
    ],
)
def test_malformed_files(tmp_path, text, match):
    p = tmp_path / "bad.xml"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_voc_xml(p)


def test_missing_paths(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_voc_xml(tmp_path / "nope.xml")
    with pytest.raises(ValueError, match="not a directory"):
        load_voc_annotations(tmp_path / "nope")
    with pytest.raises(ValueError, match="rows, cols"):
        boxes_to_mask([], (0, 4))
    with pytest.raises(ValueError, match="rows, cols"):
        scale_box(BoundingBox("A", 0, 0, 1, 1), (4,), (4, 4))
