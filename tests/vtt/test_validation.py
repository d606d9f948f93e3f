"""Validation of reader input: every error names its field."""

from __future__ import annotations

import pytest

from monai_synth.apps.vtt import (
    InputError,
    parse_answer,
    parse_confidence,
    parse_lesion,
    parse_reader_name,
    parse_window,
)


@pytest.mark.parametrize(
    "raw, display, key",
    [("Ann", "Ann", "ann"), ("  Dr.  O'Neil-Smith ", "Dr. O'Neil-Smith", "dr. o'neil-smith"),
     ("Zoë 2", "Zoë 2", "zoë 2"), ("r_01", "r_01", "r_01")],
    ids=["plain", "spaces-collapsed", "unicode", "underscore"],
)  # fmt: skip
def test_reader_names_normalized(raw, display, key):
    assert parse_reader_name(raw) == (display, key)


@pytest.mark.parametrize(
    "raw",
    ["", "   ", None, "x" * 65, "<script>", "a/b", "_lead", "ann;drop", "a\nb\tc\x00"],
    ids=["empty", "blank", "none", "too-long", "markup", "slash", "leading-underscore", "semicolon", "control"],
)
def test_bad_reader_names(raw):
    with pytest.raises(InputError, match="^name: ") as e:
        parse_reader_name(raw)
    assert e.value.field == "name"


@pytest.mark.parametrize("raw", ["0", "6", "-1", "3.5", "", None, "five", "１"], ids=str)
def test_bad_confidence(raw):
    with pytest.raises(InputError, match="^confidence: choose a confidence from 1 to 5"):
        parse_confidence(raw)


def test_good_values():
    assert [parse_confidence(str(c)) for c in range(1, 6)] == [1, 2, 3, 4, 5]
    assert parse_answer("real") == "real" and parse_answer("synthetic") == "synthetic"
    assert parse_lesion("1", True) == 1 and parse_lesion(None, True) == 0 and parse_lesion(None, False) is None
    assert parse_window("", "") is None and parse_window("-600", "1500") == (-600.0, 1500.0)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda: parse_answer("fake"), "answer"),
        (lambda: parse_answer(None), "answer"),
        (lambda: parse_lesion("1", False), "lesion"),
        (lambda: parse_lesion("yes", True), "lesion"),
        (lambda: parse_window("40", ""), "window"),
        (lambda: parse_window("abc", "10"), "window center"),
        (lambda: parse_window("40", "0"), "window width"),
        (lambda: parse_window("nan", "10"), "window center"),
        (lambda: parse_window("40", "1e400"), "window width"),
    ],
    ids=["answer-fake", "answer-missing", "lesion-not-asked", "lesion-bad", "window-half", "window-nan-text",
         "window-zero-width", "window-nan", "window-inf"],
)  # fmt: skip
def test_errors_name_the_field(call, field):
    with pytest.raises(InputError) as e:
        call()
    assert e.value.field == field and str(e.value).startswith(f"{field}: ")
