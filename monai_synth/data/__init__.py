"""Clinical image I/O: readers, the one image loader and labelled-split loader, datalists, writers, demo data.

Importing this package (or ``monai_synth``) registers ``"SimpleITKReader"`` and ``"ClinicalDicomReader"`` as reader
names for ``monai.transforms.LoadImage`` / ``LoadImaged``. See docs/data.md.
"""

from __future__ import annotations

from .readers import SITK_SUFFIXES, SimpleITKReader, register_readers  # isort: skip (registers before other imports)
from .annotations import BoundingBox, VOCAnnotation, boxes_to_mask, load_voc_annotations, read_voc_xml
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
from .deid import PS315_BASIC_PROFILE, Violation, check_deidentified
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
from .image_io import PIL_SUFFIXES, is_dicom_path, load_image_2d, min_max, resize_images
from .ranges import from_unit_range, to_unit_range
from .splits import SPLITS, grouped_split, items_from_arrays, load_labelled_splits, patient_of
from .writers import (
    ImageFormat,
    to_uint8,
    write_image,
    write_nifti,
    write_png,
    write_png_uint8,
    write_synthetic_dicom,
)

register_readers()
