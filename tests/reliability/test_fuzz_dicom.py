"""Fuzz the DICOM loading path with seeded byte corruptions of real files.

Documented contract (monai_synth/data/dicom.py module docstring and docs/data.md): only
:class:`~monai_synth.data.DicomReadError` (a ValueError) for anything wrong with the files, and FileNotFoundError for
a missing path, may escape :func:`~monai_synth.data.load_dicom`. A corrupted file may also still load (e.g. flipped
pixel bytes), which is fine; it must then give a finite array of the header's size.

Mutations (seeded, reproducible): flip 1-16 random bytes, truncate at a random offset, insert 1-64 random bytes, or
overwrite a run of bytes with 0x00/0xFF. 75 % of mutations target the first ``HEADER_BYTES`` (where the tags and,
for JPEG 2000, the codestream header live), the rest the whole file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import CT_SLICE, CXR_J2K

from monai_synth.data import DicomReadError, load_dicom

HEADER_BYTES = 4096
DOCUMENTED = (DicomReadError, FileNotFoundError)
N_VARIANTS = {"ct": 120, "cxr_j2k": 40}


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random corruption of ``data`` and a short description of it."""
    n = len(data)
    hi = min(n, HEADER_BYTES) if rng.random() < 0.75 else n
    kind = rng.choice(["flip", "truncate", "insert", "overwrite"])
    buf = bytearray(data)
    if kind == "flip":
        pos = rng.integers(0, hi, size=int(rng.integers(1, 17)))
        for p in pos:
            buf[p] ^= int(rng.integers(1, 256))
        return bytes(buf), f"flip@{sorted(int(p) for p in pos)[:4]}"
    if kind == "truncate":
        cut = int(rng.integers(0, hi))
        return bytes(buf[:cut]), f"truncate@{cut}"
    if kind == "insert":
        pos, k = int(rng.integers(0, hi)), int(rng.integers(1, 65))
        return bytes(buf[:pos]) + rng.bytes(k) + bytes(buf[pos:]), f"insert{k}@{pos}"
    pos, k = int(rng.integers(0, hi)), int(rng.integers(1, 257))
    fill = 0xFF if rng.random() < 0.5 else 0x00
    buf[pos : pos + k] = bytes([fill]) * len(buf[pos : pos + k])
    return bytes(buf), f"overwrite{k}x{fill:02x}@{pos}"


@pytest.mark.parametrize("name,rel", [("ct", CT_SLICE), ("cxr_j2k", CXR_J2K)], ids=["ct", "cxr_j2k"])
def test_corrupted_dicom_raises_only_documented_errors(name, rel, shared_data, tmp_path):
    original = (shared_data / rel).read_bytes()
    rng = np.random.default_rng(20261123)
    escaped, loaded, refused = [], 0, 0
    for i in range(N_VARIANTS[name]):
        data, how = mutate(original, rng)
        path = tmp_path / f"{name}_{i:03d}.dcm"
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = load_dicom(path)
        except DOCUMENTED as e:
            refused += 1
            assert path.name in str(e), f"variant {i} ({how}): message does not name the file: {e}"
        except Exception as e:  # anything else escaping is a contract violation
            escaped.append(f"{i} {how}: {type(e).__name__}: {str(e)[:160]}")
        else:
            loaded += 1
            arr = np.asarray(img)
            assert arr.size > 0 and np.all(np.isfinite(arr)), f"variant {i} ({how}) loaded a non-finite image"
        path.unlink()
    assert not escaped, f"{len(escaped)} undocumented exceptions escaped load_dicom:\n" + "\n".join(escaped)
    assert refused > 0 and loaded + refused == N_VARIANTS[name]


def test_mutations_are_seeded():
    data = bytes(range(256)) * 64
    a = [mutate(data, np.random.default_rng(1)) for _ in range(5)]
    b = [mutate(data, np.random.default_rng(1)) for _ in range(5)]
    assert a == b and any(m[0] != data for m in a)


def test_fuzz_files_are_copies(shared_data):
    """The fuzz never writes to the shared folder (it only reads the originals)."""
    for rel in (CT_SLICE, CXR_J2K):
        assert Path(shared_data / rel).stat().st_size > HEADER_BYTES
