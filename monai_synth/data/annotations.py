"""PASCAL-VOC XML bounding-box annotations (as shipped with TCIA Lung-PET-CT-Dx).

The Lung-PET-CT-Dx collection gives one XML per annotated slice, named by the slice's SOPInstanceUID,
in PASCAL-VOC layout::

    <annotation><size><width>512</width><height>512</height>...</size>
      <object><name>A</name><bndbox><xmin>278</xmin><ymin>308</ymin><xmax>360</xmax><ymax>394</ymax></bndbox>
      </object></annotation>

``x`` runs along image columns and ``y`` along rows; the values are kept exactly as written (pixel indices,
both ends inclusive, as LabelImg writes them).  These boxes give the pathology regions used for
multi-condition guided sampling (Krishna et al., seed 001, section 2.2).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import defusedxml.ElementTree as defused_et
import numpy as np
from defusedxml import DefusedXmlException
from monai.config import PathLike

__all__ = [
    "BoundingBox",
    "VOCAnnotation",
    "boxes_to_mask",
    "load_voc_annotations",
    "read_voc_xml",
    "scale_box",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoundingBox:
    """One annotated object: class ``label`` and inclusive pixel box (``x`` = column, ``y`` = row)."""

    label: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool = False
    truncated: bool = False

    @property
    def width(self) -> int:
        return self.xmax - self.xmin + 1

    @property
    def height(self) -> int:
        return self.ymax - self.ymin + 1

    @property
    def center(self) -> tuple[float, float]:
        """Centre as ``(row, column)``, in array index order."""
        return (self.ymin + self.ymax) / 2.0, (self.xmin + self.xmax) / 2.0

    def to_dict(self) -> dict[str, int | str]:
        return {"label": self.label, "xmin": self.xmin, "ymin": self.ymin, "xmax": self.xmax, "ymax": self.ymax}


@dataclass(frozen=True)
class VOCAnnotation:
    """Contents of one PASCAL-VOC XML file."""

    source: str
    width: int
    height: int
    depth: int
    objects: list[BoundingBox] = field(default_factory=list)


def _child(elem: ET.Element, tag: str) -> ET.Element | None:
    """Case-insensitive direct child lookup (the TCIA files write ``Difficult`` capitalised)."""
    low = tag.lower()
    for c in elem:
        if c.tag.lower() == low:
            return c
    return None


def _int(elem: ET.Element, tag: str, path: PathLike, default: int | None = None) -> int:
    c = _child(elem, tag)
    if c is None or c.text is None or not c.text.strip():
        if default is not None:
            return default
        raise ValueError(f"PASCAL-VOC file {str(path)!r}: missing <{tag}> in <{elem.tag}>.")
    try:
        return int(round(float(c.text.strip())))
    except ValueError as e:
        raise ValueError(f"PASCAL-VOC file {str(path)!r}: <{tag}> is not a number: {c.text!r}.") from e


def read_voc_xml(path: PathLike) -> VOCAnnotation:
    """Read one PASCAL-VOC XML annotation file.

    Args:
        path: the XML file.

    Returns:
        The image size and the list of boxes.

    Raises:
        ValueError: when the file is missing, not XML, not an ``<annotation>`` or a box is malformed
            (``xmin > xmax`` or ``ymin > ymax``).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"PASCAL-VOC file {str(p)!r} does not exist.")
    try:  # defusedxml: no entity expansion ("billion laughs"), no external entities or DTD fetches
        root = defused_et.parse(p).getroot()
    except ET.ParseError as e:
        raise ValueError(f"PASCAL-VOC file {str(p)!r} is not valid XML: {e}.") from e
    except DefusedXmlException as e:
        raise ValueError(
            f"PASCAL-VOC file {str(p)!r} uses XML entities or a DTD ({type(e).__name__}), which annotation files "
            "never need; refusing to expand them."
        ) from e
    if root.tag.lower() != "annotation":
        raise ValueError(f"PASCAL-VOC file {str(p)!r}: root element must be <annotation>, got <{root.tag}>.")
    size = _child(root, "size")
    width = _int(size, "width", p, 0) if size is not None else 0
    height = _int(size, "height", p, 0) if size is not None else 0
    depth = _int(size, "depth", p, 1) if size is not None else 1
    objects = []
    for obj in root:
        if obj.tag.lower() != "object":
            continue
        name = _child(obj, "name")
        box = _child(obj, "bndbox")
        if box is None:
            raise ValueError(f"PASCAL-VOC file {str(p)!r}: <object> without <bndbox>.")
        bb = BoundingBox(
            label=(name.text or "").strip() if name is not None else "",
            xmin=_int(box, "xmin", p),
            ymin=_int(box, "ymin", p),
            xmax=_int(box, "xmax", p),
            ymax=_int(box, "ymax", p),
            difficult=bool(_int(obj, "difficult", p, 0)),
            truncated=bool(_int(obj, "truncated", p, 0)),
        )
        if bb.xmin > bb.xmax or bb.ymin > bb.ymax:
            raise ValueError(f"PASCAL-VOC file {str(p)!r}: box {bb.to_dict()} has min > max.")
        objects.append(bb)
    return VOCAnnotation(source=str(p), width=width, height=height, depth=depth, objects=objects)


def load_voc_annotations(folder: PathLike) -> dict[str, VOCAnnotation]:
    """Read every ``*.xml`` in ``folder``, keyed by file stem (the SOPInstanceUID for Lung-PET-CT-Dx).

    Args:
        folder: directory holding the XML files.

    Returns:
        Mapping ``stem -> VOCAnnotation`` (stems are everything before the final ``.xml``).

    Raises:
        ValueError: when ``folder`` is not a directory.
    """
    d = Path(folder)
    if not d.is_dir():
        raise ValueError(f"annotation folder {str(d)!r} does not exist or is not a directory.")
    out = {p.name[: -len(".xml")]: read_voc_xml(p) for p in sorted(d.glob("*.xml"))}
    logger.debug("read %d PASCAL-VOC files from %s", len(out), d)
    return out


def scale_box(box: BoundingBox, from_size: Sequence[int], to_size: Sequence[int]) -> BoundingBox:
    """Map a box from an image of ``from_size = (rows, cols)`` to one resized to ``to_size``.

    Pixel ``i`` covers ``[i, i+1)``; the scaled box covers the same continuous area, rounded outward,
    and is clipped to the new image.

    Raises:
        ValueError: when a size is not two positive integers.
    """
    if len(from_size) != 2 or len(to_size) != 2 or min(*from_size, *to_size) <= 0:
        raise ValueError(f"`from_size` and `to_size` must be (rows, cols) > 0, got {from_size} and {to_size}.")
    sy, sx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    ymin = int(np.floor(box.ymin * sy))
    xmin = int(np.floor(box.xmin * sx))
    ymax = int(np.ceil((box.ymax + 1) * sy)) - 1
    xmax = int(np.ceil((box.xmax + 1) * sx)) - 1
    return BoundingBox(
        label=box.label,
        xmin=max(0, xmin),
        ymin=max(0, ymin),
        xmax=min(to_size[1] - 1, max(xmin, xmax)),
        ymax=min(to_size[0] - 1, max(ymin, ymax)),
        difficult=box.difficult,
        truncated=box.truncated,
    )


def boxes_to_mask(boxes: Sequence[BoundingBox], shape: Sequence[int]) -> np.ndarray:
    """Binary ``uint8`` mask of shape ``(rows, cols)``, 1 inside any box (inclusive bounds, clipped).

    Raises:
        ValueError: when ``shape`` is not two positive integers.
    """
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"`shape` must be (rows, cols) > 0, got {tuple(shape)}.")
    mask = np.zeros(tuple(int(s) for s in shape), dtype=np.uint8)
    for b in boxes:
        mask[max(0, b.ymin) : max(0, b.ymax + 1), max(0, b.xmin) : max(0, b.xmax + 1)] = 1
    return mask
