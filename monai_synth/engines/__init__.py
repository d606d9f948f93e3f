"""Engines: diffusion training on MONAI's SupervisedTrainer and synthetic dataset generation."""

from __future__ import annotations

from .classification import (
    SELECTION_METRICS,
    ClassifierRunConfig,
    RunResult,
    class_weights,
    classifier_transforms,
    data_fingerprint,
    plot_confusion_matrix,
    plot_training_curves,
    predict_probabilities,
    stratified_counts,
    stratified_fraction,
    stratified_sample,
    train_classifier,
)
from .diffusion import (
    ClassConditionedPrepareBatch,
    DiffusionLoss,
    SchedulerKind,
    build_diffusion_trainer,
    build_diffusion_unet,
    build_scheduler,
    diffusion_target,
    get_loss_function,
    is_rank0,
)

__all__ = [
    "ClassConditionedPrepareBatch",
    "DiffusionLoss",
    "SchedulerKind",
    "build_diffusion_trainer",
    "build_diffusion_unet",
    "build_scheduler",
    "diffusion_target",
    "get_loss_function",
    "is_rank0",
]
__all__ += [
    "SELECTION_METRICS",
    "ClassifierRunConfig",
    "RunResult",
    "class_weights",
    "classifier_transforms",
    "data_fingerprint",
    "plot_confusion_matrix",
    "plot_training_curves",
    "predict_probabilities",
    "stratified_counts",
    "stratified_fraction",
    "stratified_sample",
    "train_classifier",
]
from .generate import (  # noqa: E402
    GenerationResult,
    GenerationSettingsError,
    generate_dataset,
    load_weights_for_sampling,
    model_fingerprint,
    plan_class_counts,
)

__all__ += [
    "GenerationResult",
    "GenerationSettingsError",
    "generate_dataset",
    "load_weights_for_sampling",
    "model_fingerprint",
    "plan_class_counts",
]
from .diffusion_data import DataSource, load_diffusion_training_data, resize_unit_image  # noqa: E402

__all__ += ["DataSource", "load_diffusion_training_data", "resize_unit_image"]
from .guided import (  # noqa: E402
    PreparedImage,
    ReferencePairs,
    build_reference_pairs,
    guided_sample_pairs,
    resolve_guided_data,
    run_guided_sampling,
)

__all__ += [
    "PreparedImage",
    "ReferencePairs",
    "build_reference_pairs",
    "guided_sample_pairs",
    "resolve_guided_data",
    "run_guided_sampling",
]
from .privacy import (  # noqa: E402
    PrivacyFilter,
    PrivacyFilterResult,
    filter_generated_dataset,
    privacy_filter,
    threshold_from_holdout,
)

__all__ += [
    "PrivacyFilter",
    "PrivacyFilterResult",
    "filter_generated_dataset",
    "privacy_filter",
    "threshold_from_holdout",
]
