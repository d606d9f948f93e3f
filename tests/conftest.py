"""Test configuration: shared real-data fixture, deterministic tiny settings.

This folder has no ``__init__.py``: with pytest's default ``prepend`` import mode the folder of this conftest
(``tests/``) is put on ``sys.path``, so test modules import the shared helpers as ``from helpers import ...``
(tests/helpers.py). One torch thread is set here for the whole session; test modules do not set it again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from monai_synth.utils.shared_data import SHARED_ENV, shared_root

# tiny tensors: one thread avoids threading overhead and oversubscription when other jobs share the CPU
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder ``<shared>/data``.

    Skips with a reason when it is absent on a user's machine; fails when ``$MONAI_SYNTH_SHARED`` is set
    (as in CI) but does not hold the data, so CI can never silently skip real-data tests.
    """
    root = shared_root()
    if root is None or not (root / "data").is_dir():
        if os.environ.get(SHARED_ENV):
            pytest.fail(f"${SHARED_ENV}={os.environ[SHARED_ENV]!r} is set but has no data/ folder.")
        pytest.skip(f"real shared data not available: set ${SHARED_ENV} to the folder holding data/")
    return root / "data"


@pytest.fixture(autouse=True)
def _restore_mlflow_tracking_env():
    """``mlflow.set_tracking_uri`` sets a process global and ``$MLFLOW_TRACKING_URI``; reset both after every test
    that changed them, so a test that points MLflow at its temporary store cannot redirect later tests' runs."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != before:
        import mlflow

        mlflow.set_tracking_uri(before)
