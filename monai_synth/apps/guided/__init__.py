"""Guided synthesis of lung CT and mammograms with pathologies (seed 001): data, patches, sampling."""

from __future__ import annotations

from .data import (
    IMAGE_KINDS,
    GuidedData,
    PreparedImage,
    breast_bounding_box,
    image_dataset,
    list_dicom_files,
    load_ct_slice,
    load_mammogram,
    load_prepared_images,
    make_demo_guided_data,
    resolve_guided_data,
    with_boxes,
    without_boxes,
)
from .patches import ReferencePairs, build_reference_pairs, cut_patch, mammo_patch_transform, prepare_mammo_patch
from .sampling import (
    GuidedSampler,
    guided_sample_pairs,
    reference_id,
    run_guided_sampling,
    save_montage,
    write_annotated_samples,
)
