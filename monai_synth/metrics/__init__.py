"""Evaluation metrics for synthetic images: FID, KID, SSIM/MS-SSIM/MSE, feature extractors, memorization audit.

Pure compute functions and MONAI-style metric classes; nothing here imports Ignite (see ``monai_synth.handlers``).
"""

from __future__ import annotations

from .classification import (
    METRIC_NAMES,
    PrecisionRecallF1,
    accuracy,
    accuracy_ci,
    auc_ci,
    classification_metrics,
    confusion_matrix,
    per_class_accuracy,
    precision_recall_f1,
    rank_with_ties,
    roc_auc,
    roc_curve_points,
)
from .features import (
    INCEPTION_DIMS,
    INCEPTION_INPUT_RANGE,
    FeatureExtractor,
    InceptionFeatureExtractor,
    as_float_images,
    locate_inception_weights,
    resize_tf_bilinear,
)
from .fid import FeatureStatistics, FIDMetric, compute_fid, frechet_distance
from .kid import KIDMetric, KIDResult, compute_kid, mmd2_unbiased, polynomial_kernel
from .lesion import LesionInBox, lesion_in_box, lesion_in_box_batch, summarize_lesion_scores
from .memorization import (
    MemorizationReport,
    SpaceAudit,
    memorization_audit,
    nearest_neighbours,
    pixel_vectors,
    plot_closest_pairs,
)
from .similarity import (
    MS_SSIM_WEIGHTS,
    PairwiseScore,
    ms_ssim_between,
    ms_ssim_params_for_size,
    ms_ssim_within,
    mse_between,
    mse_of_means,
    sample_pairs,
    ssim_between,
    ssim_within,
)
