"""Helpers of the reader-study tests (imported as ``from vtt_helpers import ...``): tiny image folders with telltale
names, a served study, an HTTP reader, the browser check."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from monai_synth.apps.vtt import StudyDB, StudyServer, create_app, new_token, open_study
from monai_synth.data import write_demo_dicom, write_png_uint8

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1000,800"]  # fmt: skip
HTTP_TIMEOUT = 10.0  # seconds for any one request of a test

# Names that must never reach a browser: every folder and file stem of the study images.
REAL_DIR, REAL_SUB, SYN_DIR = "realfolderkiwi", "nestedmangofolder", "synthfolderlemon"
REAL_STEMS = [f"realzebraimage{i}" for i in range(3)]
DICOM_STEM, DICOM_NOEXT = "ctslicewalrus", "ctnoextpelican"
SYN_STEMS = [f"synthotterimage{i}" for i in range(5)]


@dataclass
class StudyFiles:
    """The two image folders of a test study and every name that must stay hidden."""

    real: Path
    synthetic: Path
    secrets: list[str]


def make_study_files(root: Path) -> StudyFiles:
    """3 PNGs in a nested folder, a CT DICOM (``.dcm``) and an extensionless DICOM as real; 5 PNGs as synthetic.

    Sizes differ (8-32 px) so a wrong image would show; every name is distinctive so a leak is found by search.
    """
    rng = np.random.default_rng(0)
    real, synthetic = root / REAL_DIR, root / SYN_DIR
    for i, stem in enumerate(REAL_STEMS):
        write_png_uint8(rng.integers(0, 256, (12 + 4 * i, 16), dtype=np.uint8), real / REAL_SUB / f"{stem}.png")
    ct = rng.integers(0, 2000, (16, 16)).astype(np.uint16)
    write_demo_dicom(real / f"{DICOM_STEM}.dcm", ct, "ct")
    write_demo_dicom(real / DICOM_NOEXT, ct[::-1].copy(), "ct")
    for i, stem in enumerate(SYN_STEMS):
        write_png_uint8(rng.integers(0, 256, (8 + 6 * i, 20), dtype=np.uint8), synthetic / f"{stem}.png")
    (synthetic / "notes.txt").write_text("not an image")
    secrets = [REAL_DIR, REAL_SUB, SYN_DIR, DICOM_STEM, DICOM_NOEXT, *REAL_STEMS, *SYN_STEMS, str(root), "DEMO00000"]
    return StudyFiles(real, synthetic, secrets)


@dataclass
class ServedStudy:
    """A study served on 127.0.0.1 for a test."""

    url: str
    db: StudyDB
    admin_token: str
    files: StudyFiles
    server: StudyServer

    def truth_of(self, token: str) -> str:
        return next(it["truth"] for it in self.db.items() if it["token"] == token)


def serve(files: StudyFiles, db_path: Path, n: int | None = 10, ask_lesion: bool = False) -> ServedStudy:
    db = open_study(files.real, files.synthetic, db_path, n=n, seed=3, ask_lesion=ask_lesion)
    token = new_token()
    server = StudyServer(create_app(db, token), host="127.0.0.1", port=0, log_level="warning").start()
    return ServedStudy(server.url, db, token, files, server)


class Reader:
    """A reader's HTTP session (``requests``), for tests below the browser."""

    def __init__(self, url: str) -> None:
        self.url, self.http = url, requests.Session()

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.url + path, timeout=HTTP_TIMEOUT, **kw)

    def post(self, path: str, data: dict, **kw) -> requests.Response:
        return self.http.post(self.url + path, data=data, timeout=HTTP_TIMEOUT, **kw)

    def start(self, name: str) -> requests.Response:
        csrf = field(self.get("/").text, "csrf")
        return self.post("/start", {"csrf": csrf, "name": name})


def field(html: str, name: str) -> str:
    """The value of the hidden input ``name`` of a page."""
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no field {name!r} in the page"
    return m.group(1)


# ------------------------------------------------------------------------------------------------ the browser
def browser_available() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


def require_browser() -> None:
    """Skip without Chromium on a developer machine; fail in CI (``$CI`` set), which must run the browser tests."""
    if browser_available():
        return
    msg = f"headless Chromium needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the browser is missing. {msg} (.ci/run does this).")
    pytest.skip(msg)
