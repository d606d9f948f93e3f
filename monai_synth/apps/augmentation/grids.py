"""Classifier grids of the augmentation study: the Table 2 arms, the reduced main-job grid, synthetic increments.

The arms are those of seed 000 Table 2 (geometric augmentation x synthetic pretraining x real fine-tuning fraction x
weighted loss; rows 17-18 synthetic only) and of seed 001 Table 1 (real data plus increments of synthetic images);
docs/classification.md maps each grid to its paper.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monai_synth.apps.augmentation.tags import TABLE2_ROW_TAG
from monai_synth.engines.classification import ClassifierRunConfig

__all__ = [
    "GRID_PRESETS",
    "REDUCED_ROWS",
    "TABLE2_ARMS",
    "expand_grid",
    "get_grid",
    "increments_grid",
    "scaled_increments",
    "reduced_grid",
    "table2_grid",
]

# (row, geometric aug, synthetic pretraining, real data fine-tuning %, weighted loss), in Table 2's order
TABLE2_ARMS: tuple[tuple[int, bool, bool, int, bool], ...] = (
    (1, False, False, 100, False), (2, False, False, 100, True), (3, False, True, 100, False),
    (4, False, True, 100, True), (5, True, False, 100, False), (6, True, False, 100, True),
    (7, True, True, 100, False), (8, True, True, 100, True), (9, False, False, 10, False),
    (10, False, False, 10, True), (11, False, True, 10, False), (12, False, True, 10, True),
    (13, True, False, 10, False), (14, True, False, 10, True), (15, True, True, 10, False),
    (16, True, True, 10, True), (17, False, True, 0, False), (18, True, True, 0, False),
)  # fmt: skip

# the main job's eight arms: real 100 % / 10 % real / synthetic PT + 10 % real / synthetic only, each +- geometric aug
REDUCED_ROWS: tuple[int, ...] = (1, 5, 9, 13, 11, 15, 17, 18)


def _arm_options(row: int) -> dict[str, Any]:
    arm = {a[0]: a for a in TABLE2_ARMS}[row]
    return {"geometric_aug": arm[1], "synthetic_pretrain": arm[2], "real_fraction": arm[3] / 100.0}


def expand_grid(base: ClassifierRunConfig | None = None, **axes: Sequence[Any]) -> list[ClassifierRunConfig]:
    """Cartesian product of option values over ``base``, e.g.
    ``expand_grid(base, geometric_aug=[False, True], seed=[0, 1, 2])`` gives 6 runs (last axis fastest).

    Raises:
        ValueError: for an unknown option name (and any invalid value, through the config's validation).
    """
    base = base or ClassifierRunConfig()
    fields = set(base.to_dict())
    for k in axes:
        if k not in fields:
            raise ValueError(f"grid axis {k!r} is not a ClassifierRunConfig option; choose from {sorted(fields)}.")
    keys = list(axes)
    out = []
    for values in itertools.product(*(list(axes[k]) for k in keys)):
        changes = dict(zip(keys, values))
        name = "_".join(f"{k}={v}" for k, v in changes.items()) or base.name
        out.append(base.replace(name=name, **changes))
    return out


def table2_grid(base: ClassifierRunConfig | None = None) -> list[ClassifierRunConfig]:
    """The 18 arms of :data:`TABLE2_ARMS` over ``base`` (row number in the tag ``table2_row``)."""
    base = base or ClassifierRunConfig()
    return [
        base.replace(
            **_arm_options(row),
            weighted_loss=weighted,
            name=f"t2_row{row:02d}",
            tags={**base.tags, TABLE2_ROW_TAG: str(row), "reference": "seed000"},
        )
        for row, *_, weighted in TABLE2_ARMS
    ]


def reduced_grid(
    epochs: int = 5,
    pretrain_epochs: int | None = None,
    seed: int = 0,
    rows: Sequence[int] | None = None,
    **base: Any,
) -> list[ClassifierRunConfig]:
    """The main job's grid: the arms :data:`REDUCED_ROWS` of :data:`TABLE2_ARMS`, unweighted loss.

    Args:
        epochs: classifier epochs per stage.
        pretrain_epochs: epochs of the synthetic pretraining stage (default: ``epochs``).
        seed: classifier seed of every arm.
        rows: keep only these Table 2 rows (default: all eight).
        base: more ``ClassifierRunConfig`` options.
    """
    keep = set(REDUCED_ROWS if rows is None else rows)
    return [
        ClassifierRunConfig(
            **_arm_options(row),
            epochs=epochs,
            pretrain_epochs=pretrain_epochs,
            seed=seed,
            name=f"row{row}",
            tags={TABLE2_ROW_TAG: str(row)},
            **base,
        )
        for row in REDUCED_ROWS
        if row in keep
    ]


def increments_grid(
    base: ClassifierRunConfig | None = None, increments: Sequence[int] = (0, 2500, 5000, 7500, 10000)
) -> list[ClassifierRunConfig]:
    """Real training data plus increasing numbers of synthetic images (default +0 ... +10000, seed 001 Table 1)."""
    base = base or ClassifierRunConfig()
    return [
        base.replace(synthetic_added=int(n), name=f"synth_plus{int(n)}", tags={**base.tags, "synthetic_added": str(n)})
        for n in increments
    ]


def scaled_increments(n_real: int, n_synthetic: int | None = None, steps: int = 4, ratio: float = 1 / 3) -> list[int]:
    """Seed 001's increments scaled to the data at hand: ``0, r, 2r, ..., steps * r`` with ``r = round(ratio *
    n_real)`` (the paper adds 2500 to 7500 real images: ``ratio = 1/3``), and at least 1.

    With ``n_synthetic`` the step shrinks until the largest increment fits the synthetic set (never below 1).

    Raises:
        ValueError: when ``n_real < 1``, ``steps < 1``, ``ratio <= 0``, or ``n_synthetic < steps`` (not even one
            synthetic image per step).
    """
    if n_real < 1 or steps < 1 or not ratio > 0:
        raise ValueError(f"need n_real >= 1, steps >= 1 and ratio > 0, got {n_real}, {steps}, {ratio}.")
    r = max(1, int(round(ratio * n_real)))
    if n_synthetic is not None:
        if n_synthetic < steps:
            raise ValueError(
                f"{n_synthetic} synthetic images cannot make {steps} increments: synthesize at least {steps * r} "
                f"(the real training set has {n_real} images; the increments are {r} each)."
            )
        r = min(r, n_synthetic // steps)
    return [k * r for k in range(steps + 1)]


GRID_PRESETS: dict[str, Callable[..., list[ClassifierRunConfig]]] = {
    "table2": table2_grid,
    "increments": increments_grid,
}
_PRESET_ALIASES = {"seed000_table2": "table2", "seed001_increments": "increments"}


def get_grid(
    grid: str | Sequence[ClassifierRunConfig], base: ClassifierRunConfig | Mapping[str, Any] | None = None
) -> list[ClassifierRunConfig]:
    """A preset name from ``GRID_PRESETS`` (built over ``base``) or an explicit list of configs.

    ``base`` may be a dict of :class:`ClassifierRunConfig` options (convenient from a bundle config).
    """
    if isinstance(base, Mapping):
        base = ClassifierRunConfig(**base)
    if isinstance(grid, str):
        name = _PRESET_ALIASES.get(grid, grid)
        if name not in GRID_PRESETS:
            raise ValueError(f"`grid` must be one of {sorted(GRID_PRESETS)} or a list of configs, got {grid!r}.")
        if name != grid:
            warnings.warn(f"grid preset {grid!r} is now {name!r} (removed in 0.3)", FutureWarning, stacklevel=2)
        return GRID_PRESETS[name](base)
    configs = list(grid)
    if not configs or not all(isinstance(c, ClassifierRunConfig) for c in configs):
        raise ValueError("`grid` must be a preset name or a non-empty list of ClassifierRunConfig.")
    return configs
