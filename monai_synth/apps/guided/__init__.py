"""Guided synthesis of lung CT and mammograms with pathologies (seed 001): data, patches, sampling."""

from __future__ import annotations

from .data import (
    IMAGE_KINDS,
    GuidedData,
    PreparedImage,
    anatomy_references,
    breast_bounding_box,
    image_dataset,
    list_dicom_files,
    load_ct_slice,
    load_ct_volume,
    load_mammogram,
    load_prepared_images,
    make_demo_guided_data,
    resolve_guided_data,
    with_boxes,
    without_boxes,
)
from .evaluation import GUIDED_EVALUATION, evaluate_guided_samples
from .patches import (
    PASTE_MODES,
    ReferencePairs,
    build_reference_pairs,
    cut_patch,
    mammo_patch_transform,
    prepare_mammo_patch,
)
from .sampling import (
    GUIDANCE_MODES,
    LESION_REPORT,
    GuidedSampler,
    guided_sample_pairs,
    reference_id,
    run_guided_sampling,
    save_montage,
    write_annotated_samples,
)
from .study import SEED001_TABLE1, generator_items, labelled_items, run_increments_study, with_positive_fraction
