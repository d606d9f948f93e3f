"""Check that a synthetic DICOM file carries no identifying value of the DICOM files it was derived from.

The attribute list is the whole DICOM PS3.15 Annex E "Basic Application Level Confidentiality Profile" table
(Table E.1-1, edition :data:`PROFILE_EDITION`: 655 rows, repeating groups such as overlay data ``(60xx,3000)`` and
curve data ``(50xx,xxxx)`` included), read from the maintained ``dicom-anonymizer`` package (BSD licence), which
transcribes the standard's table per edition. Each row keeps the Basic Profile action code of the standard:

====  =========================================================================================================
code  meaning (PS3.15 Table E.1-1)
====  =========================================================================================================
D     replace with a non-zero-length dummy value consistent with the VR
Z     replace with a zero-length value, or a dummy value consistent with the VR
X     remove
U     replace with a non-zero-length UID that is internally consistent within a set of instances
X/Z, X/D, Z/D, X/Z/D, X/Z/U*
      the choice depends on the Information Object Definition (type 1 / 2 / 3 attribute); see the standard
====  =========================================================================================================

:func:`check_deidentified` does not need to know which action the writer chose: for a synthetic image derived from
real ``sources`` the outcome of every action must be that **no** profile attribute carries a value found in a source,
that every instance UID is new, and that the file says it is derived and de-identified.
:func:`exclude_burned_in` keeps images whose pixels carry burned-in identifying text (``BurnedInAnnotation YES``)
out of training and guidance, with a warning listing them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from monai.utils import optional_import

pydicom, has_pydicom = optional_import("pydicom")

__all__ = [
    "PROFILE_EDITION",
    "PS315_BASIC_PROFILE",
    "exclude_burned_in",
    "profile_row",
    "ProfileAttribute",
    "Violation",
    "UID_ACTION",
    "check_deidentified",
    "profile_tags",
    "source_identifying_values",
]

logger = logging.getLogger(__name__)

UID_ACTION = "U"


@dataclass(frozen=True)
class ProfileAttribute:
    """One row of DICOM PS3.15 Table E.1-1: ``tag`` as ``(group, element)``, pydicom ``keyword``, Basic Profile
    ``action`` code."""

    tag: tuple[int, int]
    keyword: str
    action: str
    mask: tuple[int, int] | None = None  # repeating groups: (group mask, element mask), e.g. overlay data 60xx

    def matches(self, tag: int) -> bool:
        """Whether the integer tag ``0xGGGGEEEE`` is this row (through the mask for repeating groups)."""
        group, element = tag >> 16, tag & 0xFFFF
        if self.mask is None:
            return (group, element) == self.tag
        return (group & self.mask[0]) == self.tag[0] and (element & self.mask[1]) == self.tag[1]


PROFILE_EDITION = "DICOM PS3.15 2026c, Table E.1-1 (as transcribed by dicom-anonymizer 2.1)"
"""The edition of the Basic Profile table in :data:`PS315_BASIC_PROFILE`."""

_ACTION_LISTS = {
    "D": "D_TAGS", "Z": "Z_TAGS", "X": "X_TAGS", "U": "U_TAGS", "Z/D": "Z_D_TAGS", "X/Z": "X_Z_TAGS",
    "X/D": "X_D_TAGS", "X/Z/D": "X_Z_D_TAGS", "X/Z/U*": "X_Z_U_STAR_TAGS",
}  # fmt: skip


def _load_profile() -> tuple[ProfileAttribute, ...]:
    """Table E.1-1 rows from the ``dicom-anonymizer`` package (a dependency): exact tags and masked repeating groups
    (``(group, element, group_mask, element_mask)``)."""
    from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table

    rows = []
    for action, name in _ACTION_LISTS.items():
        for entry in getattr(table, name):
            group, element = int(entry[0]), int(entry[1])
            mask = (int(entry[2]), int(entry[3])) if len(entry) == 4 else None
            keyword = "" if mask else (pydicom.datadict.keyword_for_tag((group << 16) | element) or "")
            rows.append(ProfileAttribute((group, element), keyword or f"({group:04X},{element:04X})", action, mask))
    return tuple(rows)


PS315_BASIC_PROFILE: tuple[ProfileAttribute, ...] = _load_profile()
_EXACT = {(r.tag[0] << 16) | r.tag[1]: r for r in PS315_BASIC_PROFILE if r.mask is None}
_MASKED = tuple(r for r in PS315_BASIC_PROFILE if r.mask is not None)

# Instance UIDs a synthetic image must have (and that must be new).
REQUIRED_NEW_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
# Text VRs searched for identifying strings copied into other (free-text) attributes.
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UT"}
# Identifying values shorter than this are only matched in their own attribute (avoids "M", "CT", "1" noise).
MIN_CROSS_MATCH_LEN = 6


def profile_tags(actions: Iterable[str] | None = None) -> dict[int, ProfileAttribute]:
    """Exact-tag profile rows keyed by the integer tag (``0xGGGGEEEE``), optionally only those whose action is in
    ``actions`` (repeating-group rows: :func:`profile_row`)."""
    wanted = None if actions is None else set(actions)
    return {tag: row for tag, row in _EXACT.items() if wanted is None or row.action in wanted}


def profile_row(tag: int) -> ProfileAttribute | None:
    """The profile row of an integer tag, repeating groups (``60xx``, ``50xx``) included; ``None`` if not listed."""
    row = _EXACT.get(tag)
    if row is not None:
        return row
    return next((r for r in _MASKED if r.matches(tag)), None)


@dataclass(frozen=True)
class Violation:
    """One reason why a dataset is not de-identified with respect to its sources.

    Attributes:
        kind: ``"source_value"`` (a profile attribute holds a value of the same attribute in a source),
            ``"source_value_elsewhere"`` (an identifying source value appears in another text attribute),
            ``"reused_uid"`` (an instance UID of a source), ``"missing_uid"`` (Study/Series/SOP Instance UID absent),
            ``"private_tag"`` (private attributes are removed by the Basic Profile), ``"missing_marker"`` (ImageType
            DERIVED, PatientIdentityRemoved YES, DeidentificationMethod, BurnedInAnnotation NO).
        keyword: attribute keyword (or the tag as text for private attributes).
        tag: integer tag.
        value: the offending value as text ("" for missing markers).
        message: human-readable explanation.
    """

    kind: str
    keyword: str
    tag: int
    value: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


def _norm(value) -> list[str]:
    """Non-empty string forms of an element value (the whole value and each item of a multi-value)."""
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        try:
            value = value.decode("latin-1")
        except Exception:  # pragma: no cover - latin-1 decodes anything
            return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = [str(v).strip() for v in value]
        whole = "\\".join(items)
        return [s for s in {whole, *items} if s]
    s = str(value).strip().rstrip("\x00").strip()
    return [s] if s else []


def _is_instance_uid(el) -> bool:
    """UI elements that identify instances (not SOP classes, transfer syntaxes or implementation classes)."""
    kw = el.keyword or ""
    if kw.endswith("ClassUID") or kw in ("TransferSyntaxUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID"):
        return False
    return not any(str(v).startswith("1.2.840.10008.") for v in _norm(el.value))


def _iter_elements(ds) -> Iterable:
    """All data elements of ``ds`` (recursing into sequences) plus its file meta elements."""
    yield from ds.iterall()
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        yield from meta.iterall()


def source_identifying_values(sources: Sequence) -> tuple[dict[int, set[str]], set[str], set[str]]:
    """Collect what must not reappear: ``(values per profile tag, all identifying strings, instance UIDs)``.

    Instance UIDs are the values of every UI element of the sources (at any nesting depth, file meta included) except
    class UIDs (``*ClassUID``, transfer syntax) and well-known DICOM UIDs (``1.2.840.10008.*``).
    """
    per_tag: dict[int, set[str]] = {}
    strings: set[str] = set()
    uids: set[str] = set()
    for src in sources:
        for el in _iter_elements(src):
            tag = int(el.tag)
            if el.VR == "SQ":
                continue
            if el.VR == "UI" and _is_instance_uid(el):
                uids.update(_norm(el.value))
            if profile_row(tag) is not None:
                vals = _norm(el.value)
                per_tag.setdefault(tag, set()).update(vals)
                strings.update(vals)
    return per_tag, strings, uids


def _check_markers(ds) -> list[Violation]:
    out = []
    image_type = [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]
    if not image_type or image_type[0] != "DERIVED":
        out.append(
            Violation(
                "missing_marker", "ImageType", 0x00080008, "\\".join(image_type),
                f"ImageType {image_type} must start with DERIVED for a synthetic image.",
            )
        )  # fmt: skip
    checks = (
        ("PatientIdentityRemoved", 0x00120062, "YES"),
        ("BurnedInAnnotation", 0x00280301, "NO"),
    )
    for keyword, tag, expected in checks:
        value = str(getattr(ds, keyword, "") or "").strip().upper()
        if value != expected:
            out.append(
                Violation("missing_marker", keyword, tag, value, f"{keyword} must be {expected!r}, got {value!r}.")
            )
    if not str(getattr(ds, "DeidentificationMethod", "") or "").strip():
        out.append(
            Violation(
                "missing_marker", "DeidentificationMethod", 0x00120063, "",
                "DeidentificationMethod (0012,0063) must say how the image was de-identified / synthesized.",
            )
        )  # fmt: skip
    return out


def check_deidentified(ds, sources: Sequence, check_private: bool = True) -> list[Violation]:
    """List every way ``ds`` (a synthetic DICOM dataset) could identify the patients of ``sources``.

    Checks, against the attributes of DICOM PS3.15 Table E.1-1 (:data:`PS315_BASIC_PROFILE`):

    1. no profile attribute of ``ds`` (at any nesting depth, file meta included) has a non-empty value equal to a
       value of the same attribute in any source (``"source_value"``);
    2. no text attribute of ``ds`` contains an identifying source value of at least :data:`MIN_CROSS_MATCH_LEN`
       characters, e.g. the source PatientName copied into SeriesDescription (``"source_value_elsewhere"``);
    3. no UID of ``ds`` is an instance UID of a source (``"reused_uid"``), and Study/Series/SOP Instance UIDs are
       present (``"missing_uid"``);
    4. no private attributes (``"private_tag"``; the Basic Profile removes them), unless ``check_private=False``;
    5. the synthetic markers: ImageType starts with DERIVED, PatientIdentityRemoved is YES, DeidentificationMethod
       is present, BurnedInAnnotation is NO (``"missing_marker"``).

    Args:
        ds: the dataset to check (``pydicom.Dataset``).
        sources: the real datasets the synthetic image was made from (or trained on).
        check_private: report private attributes.

    Returns:
        the violations (empty when ``ds`` passes).
    """
    per_tag, strings, uids = source_identifying_values(sources)
    # numeric identifiers (a PatientID "20481234") count too; dotted numbers are UIDs, checked below
    long_strings = {
        s for s in strings if len(s) >= MIN_CROSS_MATCH_LEN and not (s.replace(".", "").isdigit() and "." in s)
    }
    out: list[Violation] = []
    seen: set[tuple[str, int, str]] = set()

    def add(v: Violation) -> None:
        key = (v.kind, v.tag, v.value)
        if key not in seen:
            seen.add(key)
            out.append(v)

    for el in _iter_elements(ds):
        tag = int(el.tag)
        if el.tag.is_private:
            if check_private and not el.tag.is_private_creator:
                add(Violation("private_tag", str(el.tag), tag, "", f"private attribute {el.tag} is present."))
            continue
        if el.VR == "SQ":
            continue
        kw = el.keyword or str(el.tag)
        values = _norm(el.value)
        if el.VR == "UI":
            if not _is_instance_uid(el):
                continue
            for v in values:
                if v in uids:
                    add(Violation("reused_uid", kw, tag, v, f"{kw} {el.tag} reuses the source UID {v!r}."))
            continue
        row = profile_row(tag)
        same_tag = [v for v in values if row is not None and v in per_tag.get(tag, ())]
        for v in same_tag:
            msg = f"{kw} {el.tag} (PS3.15 action {row.action}) holds the source value {v!r}."
            add(Violation("source_value", kw, tag, v, msg))
        if el.VR in _TEXT_VRS and values and not same_tag:
            text = max(values, key=len)
            for s in (s for s in sorted(long_strings) if s in text):
                msg = f"{kw} {el.tag} contains the identifying source value {s!r}."
                add(Violation("source_value_elsewhere", kw, tag, s, msg))
    for kw in REQUIRED_NEW_UIDS:
        if not str(getattr(ds, kw, "") or "").strip():
            tag = int(pydicom.datadict.tag_for_keyword(kw))
            add(Violation("missing_uid", kw, tag, "", f"{kw} is missing; a synthetic image needs a new one."))
    for v in _check_markers(ds):
        add(v)
    return out


def exclude_burned_in(paths: Sequence, what: str = "images") -> tuple[list, list]:
    """Split DICOM ``paths`` into ``(kept, excluded)``: files with ``BurnedInAnnotation`` YES carry identifying text
    in their pixels (names, dates, IDs burned into the image), which no header de-identification removes, so they are
    excluded from training and guidance with a warning that lists them. Non-DICOM and unreadable paths are kept (their
    readers report problems).
    """
    kept, excluded = [], []
    for p in paths:
        flag = ""
        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=["BurnedInAnnotation"])
            flag = str(getattr(ds, "BurnedInAnnotation", "") or "").strip().upper()
        except Exception:  # not DICOM or unreadable: leave it to the reader
            flag = ""
        (excluded if flag == "YES" else kept).append(p)
    if excluded:
        logger.warning(
            "excluded %d %s marked BurnedInAnnotation=YES (identifying text in the pixels): %s",
            len(excluded), what, ", ".join(str(p) for p in excluded[:20]) + (" ..." if len(excluded) > 20 else ""),
        )  # fmt: skip
    return kept, excluded
