"""The augmentation study: recipe -> generator -> labelled synthetic set -> classifier grid -> comparison."""

from __future__ import annotations

from monai_synth.engines.recipe import DiffusionRecipe

from .compare import METRIC_COLUMNS, REFERENCES, SEED000_TABLE2, TABLE_COLUMNS, ComparisonTable, compare_runs
from .generator import GENERATOR_DONE, DiffusionItemsDataset, GeneratorResult, load_generator, train_generator
from .grids import (
    GRID_PRESETS,
    REDUCED_ROWS,
    TABLE2_ARMS,
    expand_grid,
    get_grid,
    increments_grid,
    reduced_grid,
    scaled_increments,
    table2_grid,
)
from .pipeline import AugmentationStudy, run_pipeline
from .study import StudyData, result_from_mlflow, run_key, run_study
from .synthesis import synthesize
from .tags import ROLE_TAG, RUN_KEY_TAG, STUDY_TAG, TABLE2_ROW_TAG
