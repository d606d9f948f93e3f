"""Validation of what readers send: name, answer, confidence, lesion and window fields (each error names its field)."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import NamedTuple

from monai_synth.apps.vtt.items import TRUTHS

__all__ = [
    "CONFIDENCE_LEVELS",
    "NAME_MAX_LENGTH",
    "InputError",
    "ReaderName",
    "parse_answer",
    "parse_confidence",
    "parse_lesion",
    "parse_reader_name",
    "parse_window",
]

NAME_MAX_LENGTH = 64
CONFIDENCE_LEVELS = (1, 2, 3, 4, 5)
"""1 = guessing ... 5 = certain."""
_NAME_RE = re.compile(r"^[^\W_][\w .'\-]*$")  # letters and digits of any script, then also space . ' -
_WINDOW_LIMIT = 1e7  # |center|, width: far beyond any stored value (16-bit, HU), small enough to stay finite


class InputError(ValueError):
    """A field sent by the reader's browser is missing or invalid (HTTP 400); ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ReaderName(NamedTuple):
    """A reader's name as shown (``display``) and as identified (``key``: case-folded, so Ann and ann are one)."""

    display: str
    key: str


def parse_reader_name(value: str | None) -> ReaderName:
    """Normalize (NFC, outer spaces stripped, inner runs of spaces collapsed) and check a reader name.

    Raises:
        InputError: empty, longer than :data:`NAME_MAX_LENGTH`, or with characters other than letters, digits,
            space, ``.``, ``'``, ``-`` and ``_`` (starting with a letter or digit).
    """
    name = " ".join(unicodedata.normalize("NFC", value or "").split())
    if not name:
        raise InputError("name", "enter your name (or an initials code) to start or resume.")
    if len(name) > NAME_MAX_LENGTH:
        raise InputError("name", f"at most {NAME_MAX_LENGTH} characters, got {len(name)}.")
    if not _NAME_RE.match(name):
        raise InputError("name", "use letters, digits, spaces and . ' - _ only, starting with a letter or digit.")
    return ReaderName(name, name.casefold())


def parse_answer(value: str | None) -> str:
    """``"real"`` or ``"synthetic"``.

    Raises:
        InputError: anything else.
    """
    if value not in TRUTHS:
        raise InputError("answer", f"choose one of {list(TRUTHS)} (keys R / S), got {value!r:.20}.")
    return value


def parse_confidence(value: str | None) -> int:
    """An integer of :data:`CONFIDENCE_LEVELS` (1-5) from its decimal text.

    Raises:
        InputError: missing, not an integer, or out of range.
    """
    text = (value or "").strip()
    if text not in {str(c) for c in CONFIDENCE_LEVELS}:  # ASCII digits only (not e.g. a full-width "１")
        raise InputError("confidence", f"choose a confidence from 1 to 5 (keys 1-5), got {text!r:.20}.")
    return int(text)


def parse_lesion(value: str | None, asked: bool) -> int | None:
    """``1`` (lesion present) or ``0`` when the study asks; ``None`` when it does not.

    Raises:
        InputError: a value other than absent, ``"0"`` or ``"1"``, or a value when the study does not ask.
    """
    if not asked:
        if value not in (None, ""):
            raise InputError("lesion", "this study does not ask whether a lesion is present.")
        return None
    if value in (None, "", "0"):
        return 0
    if value == "1":
        return 1
    raise InputError("lesion", f"must be 0 or 1, got {value!r:.20}.")


def _number(field: str, text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise InputError(field, f"must be a number, got {text!r:.20}.") from None
    if not math.isfinite(x) or abs(x) > _WINDOW_LIMIT:
        raise InputError(field, f"must be a finite number within +-{_WINDOW_LIMIT:g}, got {text!r:.20}.")
    return x


def parse_window(center: str | None, width: str | None) -> tuple[float, float] | None:
    """A display window ``(center, width)`` (the image's own units: HU for CT DICOM) or ``None`` for the default.

    Raises:
        InputError: only one of the two given, not finite numbers, or ``width <= 0``.
    """
    center, width = (center or "").strip(), (width or "").strip()
    if not center and not width:
        return None
    if not center or not width:
        raise InputError("window", "give both the window center and the width, or neither (default window).")
    c, w = _number("window center", center), _number("window width", width)
    if w <= 0:
        raise InputError("window width", f"must be > 0, got {width!r:.20}.")
    return c, w
