"""Small I/O helpers shared by the package: atomic writes and safe loading."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["PRIVATE_MODE", "atomic_path", "atomic_torch_save", "ensure_writable_dir", "fsync_dir", "safe_torch_load"]

PRIVATE_MODE = 0o600
"""Permissions of files derived from patient data (weights trained on it, reports naming its images)."""


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries to disk, so a rename in it survives a power cut (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` atomically.

    Readers never see a half-written file: either the old file or the complete new one exists.
    On an exception the temporary file is removed and ``path`` is left untouched.

    Args:
        path: final destination.
        mode: permissions of the final file (e.g. :data:`PRIVATE_MODE`); default ``0666`` less the umask.

    Yields:
        the temporary path to write to (same folder, so ``os.replace`` is atomic).
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp creates 0600; give the final file the usual permissions
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_torch_save(obj: Any, path: str | os.PathLike, mode: int | None = PRIVATE_MODE) -> Path:
    """``torch.save`` through :func:`atomic_path`, so a killed process never leaves a truncated checkpoint.

    Args:
        obj: the object to save (tensors, state dicts, plain Python containers).
        path: destination file.
        mode: file permissions; owner-only by default (weights trained on patient images can leak them).

    Returns:
        the destination path.
    """
    with atomic_path(path, mode) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code execution from pickles).

    Args:
        path: checkpoint file.
        map_location: device to map tensors to.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt/unsafe files
        raise ValueError(
            f"Could not load checkpoint {str(path)!r} with weights_only=True ({type(e).__name__}: {e}). "
            "The file is corrupt, truncated, or holds objects other than tensors and plain containers."
        ) from e


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) if needed and check that files can be written there.

    Raises:
        PermissionError: naming the folder, when it cannot be created or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"Cannot create output folder {str(path)!r}: {e}. Choose a writable location.") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"Output folder {str(path)!r} is not writable. Choose a writable location.")
    return path
