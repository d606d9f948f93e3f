"""Check that a synthetic DICOM file carries no identifying value of the DICOM files it was derived from.

The attribute list is the DICOM PS3.15 Annex E "Basic Application Level Confidentiality Profile" (DICOM PS3.15
Table E.1-1), restricted to the attributes that occur in ordinary CT / CR / DX / MG image objects (about 110 of the
table's rows; the table itself lists several hundred, most of them for structured reports, RT or waveforms). Each
row keeps the Basic Profile action code of the standard:

====  =========================================================================================================
code  meaning (PS3.15 Table E.1-1)
====  =========================================================================================================
D     replace with a non-zero-length dummy value consistent with the VR
Z     replace with a zero-length value, or a dummy value consistent with the VR
X     remove
K     keep (not used here)
C     clean: replace with values of similar meaning known not to hold identifying information (not used here)
U     replace with a non-zero-length UID that is internally consistent within a set of instances
X/Z, X/D, Z/D, X/Z/D, X/Z/U*
      the choice depends on the Information Object Definition (type 1 / 2 / 3 attribute); see the standard
====  =========================================================================================================

The table was written from the standard's attribute names, tags and action codes; the standard (PS3.15, current
edition, Table E.1-1) is the reference when in doubt.

:func:`check_deidentified` does not need to know which action the writer chose: for a synthetic image derived from
real ``sources`` the outcome of every action must be that **no** profile attribute carries a value found in a source,
that every instance UID is new, and that the file says it is derived and de-identified.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from monai.utils import optional_import

pydicom, has_pydicom = optional_import("pydicom")

__all__ = [
    "PS315_BASIC_PROFILE",
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


def _rows(table: Iterable[tuple[int, int, str, str]]) -> tuple[ProfileAttribute, ...]:
    return tuple(ProfileAttribute((g, e), kw, act) for g, e, kw, act in table)


# DICOM PS3.15 Table E.1-1, Basic Profile column (group, element, keyword, action).
PS315_BASIC_PROFILE: tuple[ProfileAttribute, ...] = _rows(
    [
        # ---- patient
        (0x0010, 0x0010, "PatientName", "Z"),
        (0x0010, 0x0020, "PatientID", "Z"),
        (0x0010, 0x0021, "IssuerOfPatientID", "X"),
        (0x0010, 0x0030, "PatientBirthDate", "Z"),
        (0x0010, 0x0032, "PatientBirthTime", "X"),
        (0x0010, 0x0040, "PatientSex", "Z"),
        (0x0010, 0x0050, "PatientInsurancePlanCodeSequence", "X"),
        (0x0010, 0x1000, "OtherPatientIDs", "X"),
        (0x0010, 0x1001, "OtherPatientNames", "X"),
        (0x0010, 0x1002, "OtherPatientIDsSequence", "X"),
        (0x0010, 0x1005, "PatientBirthName", "X"),
        (0x0010, 0x1010, "PatientAge", "X"),
        (0x0010, 0x1020, "PatientSize", "X"),
        (0x0010, 0x1030, "PatientWeight", "X"),
        (0x0010, 0x1040, "PatientAddress", "X"),
        (0x0010, 0x1060, "PatientMotherBirthName", "X"),
        (0x0010, 0x1080, "MilitaryRank", "X"),
        (0x0010, 0x1081, "BranchOfService", "X"),
        (0x0010, 0x1090, "MedicalRecordLocator", "X"),
        (0x0010, 0x2000, "MedicalAlerts", "X"),
        (0x0010, 0x2110, "Allergies", "X"),
        (0x0010, 0x2150, "CountryOfResidence", "X"),
        (0x0010, 0x2152, "RegionOfResidence", "X"),
        (0x0010, 0x2154, "PatientTelephoneNumbers", "X"),
        (0x0010, 0x2160, "EthnicGroup", "X"),
        (0x0010, 0x2180, "Occupation", "X"),
        (0x0010, 0x21A0, "SmokingStatus", "X"),
        (0x0010, 0x21B0, "AdditionalPatientHistory", "X"),
        (0x0010, 0x21C0, "PregnancyStatus", "X"),
        (0x0010, 0x21D0, "LastMenstrualDate", "X"),
        (0x0010, 0x21F0, "PatientReligiousPreference", "X"),
        (0x0010, 0x2203, "PatientSexNeutered", "X/Z"),
        (0x0010, 0x2297, "ResponsiblePerson", "X"),
        (0x0010, 0x2299, "ResponsibleOrganization", "X"),
        (0x0010, 0x4000, "PatientComments", "X"),
        # ---- visit / admission
        (0x0038, 0x0010, "AdmissionID", "X"),
        (0x0038, 0x0020, "AdmittingDate", "X"),
        (0x0038, 0x0021, "AdmittingTime", "X"),
        (0x0038, 0x0050, "SpecialNeeds", "X"),
        (0x0038, 0x0300, "CurrentPatientLocation", "X"),
        (0x0038, 0x0400, "PatientInstitutionResidence", "X"),
        (0x0038, 0x0500, "PatientState", "X"),
        (0x0038, 0x4000, "VisitComments", "X"),
        (0x0008, 0x1080, "AdmittingDiagnosesDescription", "X"),
        (0x0008, 0x1084, "AdmittingDiagnosesCodeSequence", "X"),
        # ---- study / series / instance dates, times, descriptions
        (0x0008, 0x0012, "InstanceCreationDate", "X/D"),
        (0x0008, 0x0013, "InstanceCreationTime", "X/Z/D"),
        (0x0008, 0x0020, "StudyDate", "Z"),
        (0x0008, 0x0021, "SeriesDate", "X/D"),
        (0x0008, 0x0022, "AcquisitionDate", "X/Z"),
        (0x0008, 0x0023, "ContentDate", "Z/D"),
        (0x0008, 0x002A, "AcquisitionDateTime", "X/D"),
        (0x0008, 0x0030, "StudyTime", "Z"),
        (0x0008, 0x0031, "SeriesTime", "X/D"),
        (0x0008, 0x0032, "AcquisitionTime", "X/Z"),
        (0x0008, 0x0033, "ContentTime", "Z/D"),
        (0x0008, 0x0201, "TimezoneOffsetFromUTC", "X"),
        (0x0008, 0x0050, "AccessionNumber", "Z"),
        (0x0008, 0x1030, "StudyDescription", "X"),
        (0x0008, 0x103E, "SeriesDescription", "X"),
        (0x0008, 0x2111, "DerivationDescription", "X"),
        (0x0020, 0x0010, "StudyID", "Z"),
        (0x0020, 0x4000, "ImageComments", "X"),
        (0x0020, 0x9158, "FrameComments", "X"),
        (0x0032, 0x1060, "RequestedProcedureDescription", "X/Z"),
        (0x0032, 0x4000, "StudyComments", "X"),
        (0x0040, 0x0244, "PerformedProcedureStepStartDate", "X"),
        (0x0040, 0x0245, "PerformedProcedureStepStartTime", "X"),
        (0x0040, 0x0250, "PerformedProcedureStepEndDate", "X"),
        (0x0040, 0x0251, "PerformedProcedureStepEndTime", "X"),
        (0x0040, 0x0253, "PerformedProcedureStepID", "X"),
        (0x0040, 0x0254, "PerformedProcedureStepDescription", "X"),
        (0x0040, 0x0275, "RequestAttributesSequence", "X"),
        (0x0040, 0x1001, "RequestedProcedureID", "X"),
        (0x0040, 0x0009, "ScheduledProcedureStepID", "X"),
        (0x0018, 0x1030, "ProtocolName", "X/D"),
        (0x0018, 0x4000, "AcquisitionComments", "X"),
        (0x0018, 0x0010, "ContrastBolusAgent", "Z/D"),
        (0x4000, 0x4000, "TextComments", "X"),
        (0x2030, 0x0020, "TextString", "X"),
        # ---- people
        (0x0008, 0x0090, "ReferringPhysicianName", "Z"),
        (0x0008, 0x0092, "ReferringPhysicianAddress", "X"),
        (0x0008, 0x0094, "ReferringPhysicianTelephoneNumbers", "X"),
        (0x0008, 0x1048, "PhysiciansOfRecord", "X"),
        (0x0008, 0x1050, "PerformingPhysicianName", "X"),
        (0x0008, 0x1060, "NameOfPhysiciansReadingStudy", "X"),
        (0x0008, 0x1070, "OperatorsName", "X/Z/D"),
        (0x0032, 0x1032, "RequestingPhysician", "X"),
        (0x0032, 0x1033, "RequestingService", "X"),
        (0x0040, 0xA075, "VerifyingObserverName", "D"),
        (0x0040, 0xA123, "PersonName", "D"),
        (0x0070, 0x0084, "ContentCreatorName", "Z"),
        (0x0040, 0x4035, "ActualHumanPerformersSequence", "X"),
        # ---- institution, device, location
        (0x0008, 0x0080, "InstitutionName", "X/Z/D"),
        (0x0008, 0x0081, "InstitutionAddress", "X"),
        (0x0008, 0x0082, "InstitutionCodeSequence", "X/Z/D"),
        (0x0008, 0x1010, "StationName", "X/Z/D"),
        (0x0008, 0x1040, "InstitutionalDepartmentName", "X"),
        (0x0018, 0x1000, "DeviceSerialNumber", "X/Z/D"),
        (0x0018, 0x1004, "PlateID", "X"),
        (0x0018, 0x1005, "GeneratorID", "X"),
        (0x0018, 0x1007, "CassetteID", "X"),
        (0x0018, 0x1008, "GantryID", "X"),
        (0x0018, 0x700A, "DetectorID", "X/D"),
        (0x0018, 0x1400, "AcquisitionDeviceProcessingDescription", "X/D"),
        (0x0040, 0x0241, "PerformedStationAETitle", "X"),
        (0x0040, 0x0242, "PerformedStationName", "X"),
        (0x0040, 0x0243, "PerformedLocation", "X"),
        # ---- references to other (identifying) instances
        (0x0008, 0x1110, "ReferencedStudySequence", "X/Z"),
        (0x0008, 0x1111, "ReferencedPerformedProcedureStepSequence", "X/Z/D"),
        (0x0008, 0x1120, "ReferencedPatientSequence", "X"),
        (0x0008, 0x1140, "ReferencedImageSequence", "X/Z/U*"),
        (0x0040, 0xA730, "ContentSequence", "X"),
        (0x0400, 0x0561, "OriginalAttributesSequence", "X"),
        (0xFFFA, 0xFFFA, "DigitalSignaturesSequence", "X"),
        # ---- UIDs (must be replaced by new, internally consistent UIDs)
        (0x0008, 0x0014, "InstanceCreatorUID", "U"),
        (0x0008, 0x0018, "SOPInstanceUID", "U"),
        (0x0008, 0x1155, "ReferencedSOPInstanceUID", "U"),
        (0x0008, 0x3010, "IrradiationEventUID", "U"),
        (0x0018, 0x1002, "DeviceUID", "U"),
        (0x0020, 0x000D, "StudyInstanceUID", "U"),
        (0x0020, 0x000E, "SeriesInstanceUID", "U"),
        (0x0020, 0x0052, "FrameOfReferenceUID", "U"),
        (0x0020, 0x0200, "SynchronizationFrameOfReferenceUID", "U"),
        (0x0040, 0xA124, "UID", "U"),
        (0x0088, 0x0140, "StorageMediaFileSetUID", "U"),
        (0x0002, 0x0003, "MediaStorageSOPInstanceUID", "U"),  # file meta copy of SOPInstanceUID
    ]
)

# Instance UIDs a synthetic image must have (and that must be new).
REQUIRED_NEW_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
# Text VRs searched for identifying strings copied into other (free-text) attributes.
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UT"}
# Identifying values shorter than this are only matched in their own attribute (avoids "M", "CT", "1" noise).
MIN_CROSS_MATCH_LEN = 6


def profile_tags(actions: Iterable[str] | None = None) -> dict[int, ProfileAttribute]:
    """Profile rows keyed by the integer tag (``0xGGGGEEEE``), optionally only those whose action is in ``actions``."""
    out = {}
    for row in PS315_BASIC_PROFILE:
        if actions is None or row.action in set(actions):
            out[(row.tag[0] << 16) | row.tag[1]] = row
    return out


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
    profile = profile_tags()
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
            if tag in profile:
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
    profile = profile_tags()
    per_tag, strings, uids = source_identifying_values(sources)
    long_strings = {s for s in strings if len(s) >= MIN_CROSS_MATCH_LEN and not s.replace(".", "").isdigit()}
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
        same_tag = [v for v in values if tag in profile and v in per_tag.get(tag, ())]
        for v in same_tag:
            msg = f"{kw} {el.tag} (PS3.15 action {profile[tag].action}) holds the source value {v!r}."
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
