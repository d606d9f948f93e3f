"""Engines: diffusion and classifier trainers, PrepareBatch strategies, dataset generation, the recipe of defaults."""

from __future__ import annotations

from .autoencoder import AutoencoderIteration, build_autoencoder_trainer, kl_divergence, latent_scale_factor
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
    ddim_from,
    diffusion_target,
    get_loss_function,
    is_rank0,
)
from .generate import GenerationResult, GenerationSettingsError, generate_dataset, model_fingerprint, plan_class_counts
from .privacy import (
    PRIVACY_REPORT,
    NearCopyFilter,
    build_near_copy_filter,
    near_copy_filter_for_splits,
    privacy_report,
    write_privacy_report,
)
from .recipe import LATENT_FROM_SIZE, AutoencoderRecipe, DiffusionRecipe, GeneratorKind
