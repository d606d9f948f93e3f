"""Clinical image I/O: DICOM and SimpleITK readers, datalist builders and built-in offline demo data.

Importing this package registers ``"SimpleITKReader"`` and ``"ClinicalDicomReader"`` as reader names for
``monai.transforms.LoadImage`` / ``LoadImaged``. See docs/data.md.
"""

from __future__ import annotations

from .datalists import (
    MEDMNIST_SPLITS,
    SPLIT_KEYS,
    LabelledDatalist,
    dicom_folder_datalist,
    download_medmnist,
    image_folder_datalist,
    load_datalist_json,
    load_medmnist_npz,
    medmnist_datalist,
    split_datalist,
    write_datalist_json,
)
from .demo import (
    CLASS_NAMES,
    DEMO_KINDS,
    DemoImages,
    make_demo_dataset,
    make_demo_images,
    make_demo_pair,
    write_demo_dicom,
)
from .dicom import DICOM_DECODER_PACKAGES, ClinicalDicomReader, DicomReadError, load_dicom
from .readers import SITK_SUFFIXES, SimpleITKReader, register_readers

register_readers()

__all__ = [
    "CLASS_NAMES",
    "DEMO_KINDS",
    "DICOM_DECODER_PACKAGES",
    "MEDMNIST_SPLITS",
    "SITK_SUFFIXES",
    "SPLIT_KEYS",
    "ClinicalDicomReader",
    "DemoImages",
    "DicomReadError",
    "LabelledDatalist",
    "SimpleITKReader",
    "dicom_folder_datalist",
    "download_medmnist",
    "image_folder_datalist",
    "load_datalist_json",
    "load_dicom",
    "load_medmnist_npz",
    "make_demo_dataset",
    "make_demo_images",
    "make_demo_pair",
    "medmnist_datalist",
    "register_readers",
    "split_datalist",
    "write_datalist_json",
    "write_demo_dicom",
]

from .writers import (  # noqa: E402  (synthetic image writers, issue 3)
    ImageFormat,
    to_uint8,
    to_unit_range,
    write_image,
    write_nifti,
    write_png,
    write_synthetic_dicom,
)

__all__ += [
    "ImageFormat",
    "to_uint8",
    "to_unit_range",
    "write_image",
    "write_nifti",
    "write_png",
    "write_synthetic_dicom",
]
from .annotations import BoundingBox, VOCAnnotation, boxes_to_mask, load_voc_annotations, read_voc_xml  # noqa: E402

__all__ += ["BoundingBox", "VOCAnnotation", "boxes_to_mask", "load_voc_annotations", "read_voc_xml"]
from .deid import PS315_BASIC_PROFILE, Violation, check_deidentified  # noqa: E402

__all__ += ["PS315_BASIC_PROFILE", "Violation", "check_deidentified"]
