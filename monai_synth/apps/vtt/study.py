"""Set up a reader study: discover both arms, draw the blinded study set, create (or reopen) its database."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from monai_synth.apps.vtt.db import StudyDB, inputs_fingerprint
from monai_synth.apps.vtt.items import REAL, SYNTHETIC, discover_images
from monai_synth.apps.vtt.sequence import draw_study_set

__all__ = ["open_study"]

logger = logging.getLogger(__name__)


def open_study(
    real: str | os.PathLike,
    synthetic: str | os.PathLike,
    db_path: str | os.PathLike,
    n: int | None = None,
    seed: int = 0,
    ask_lesion: bool = False,
) -> StudyDB:
    """The study database of ``db_path``: created with a new study set, or reopened to resume (same inputs only).

    Args:
        real: folder or datalist JSON of the real images (:func:`~monai_synth.apps.vtt.items.discover_images`).
        synthetic: folder or datalist JSON of the synthetic images.
        db_path: the SQLite file (its folder must exist).
        n: images per reader, half real and half synthetic (default: the largest balanced set).
        seed: seed of the draw and of each reader's order.
        ask_lesion: also ask readers whether a lesion is present.

    Raises:
        FileNotFoundError: a path, or an image of a reopened study, does not exist.
        ValueError: no images, an image in both arms, an impossible ``n``, or a database of another study.
    """
    real_items = discover_images(real, REAL)
    synthetic_items = discover_images(synthetic, SYNTHETIC)
    both = sorted({it.path for it in real_items} & {it.path for it in synthetic_items})
    if both:
        raise ValueError(
            f"{len(both)} image(s) are in both the real and the synthetic inputs, e.g. {both[0]!r}; give disjoint "
            "folders or datalists."
        )
    study_set = draw_study_set(real_items, synthetic_items, n=n, seed=seed)
    fingerprint = inputs_fingerprint(real_items + synthetic_items)
    db = StudyDB.create_or_open(db_path, study_set, fingerprint, seed=seed, n=n, ask_lesion=ask_lesion)
    missing = [it["path"] for it in db.items() if not Path(it["path"]).exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) of the study in {str(db_path)!r} no longer exist, e.g. {missing[0]!r}; restore "
            "them before resuming the study."
        )
    items = db.items()
    logger.info(
        "reader study %s: %d images per reader (%d real, %d synthetic)",
        db_path,
        len(items),
        sum(it["truth"] == REAL for it in items),
        sum(it["truth"] == SYNTHETIC for it in items),
    )
    return db
