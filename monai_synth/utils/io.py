"""Small I/O helpers shared by the package: atomic writes and safe loading."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; FolderLock is then a no-op
    fcntl = None

__all__ = [
    "PRIVATE_MODE",
    "FolderLock",
    "FolderLockedError",
    "atomic_path",
    "atomic_torch_save",
    "ensure_writable_dir",
    "fsync_dir",
    "safe_torch_load",
]

LOCK_NAME = ".monai_synth.lock"

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


class FolderLockedError(RuntimeError):
    """Another process is writing to the folder (see :class:`FolderLock`)."""


_HELD: dict[str, list] = {}  # resolved folder -> [file object, depth]: this process's locks (re-entrant)


class FolderLock:
    """Exclusive lock of an output folder while a process writes there (``flock`` on ``<folder>/.monai_synth.lock``).

    A second process that tries to write into the same folder (a resumed run started twice, two studies into one
    folder) gets :class:`FolderLockedError` at once, instead of deleting the first one's temporary files or marking
    its runs KILLED. The lock dies with its process (SIGKILL included), so a crashed run never leaves the folder
    locked. Within one process the lock is re-entrant. A no-op where ``fcntl`` is unavailable.

    Args:
        folder: the output folder (created).
        what: what holds the lock (in the other process's error message).
    """

    def __init__(self, folder: str | os.PathLike, what: str = "monai_synth") -> None:
        self.folder = ensure_writable_dir(folder)
        self.what = what
        self._key = str(self.folder.resolve())

    def acquire(self) -> FolderLock:
        """Take the lock (or raise :class:`FolderLockedError` naming the holder)."""
        if fcntl is None:
            return self
        held = _HELD.get(self._key)
        if held is not None:
            held[1] += 1
            return self
        f = open(self.folder / LOCK_NAME, "a+")  # noqa: SIM115 (kept open while the lock is held)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise FolderLockedError(
                f"{str(self.folder)!r} is in use by another process ({holder}); wait for it to finish or stop it, "
                "or write into another folder."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, {self.what}")
        f.flush()
        _HELD[self._key] = [f, 1]
        return self

    def release(self) -> None:
        """Release one level of the lock (the file is unlocked when the outermost holder releases)."""
        held = _HELD.get(self._key)
        if held is None:
            return
        held[1] -= 1
        if held[1] <= 0:
            del _HELD[self._key]
            fcntl.flock(held[0].fileno(), fcntl.LOCK_UN)
            held[0].close()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
