"""Fixtures of the reader-study tests: a served study, an HTTP reader, headless Chromium sessions."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from vtt_helpers import (
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    Reader,
    ServedStudy,
    StudyFiles,
    make_study_files,
    require_browser,
    serve,
)


@pytest.fixture
def study_files(tmp_path: Path) -> StudyFiles:
    return make_study_files(tmp_path / "images")


@pytest.fixture
def served(study_files: StudyFiles, tmp_path: Path) -> Iterator[ServedStudy]:
    study = serve(study_files, tmp_path / "study.db", ask_lesion=True)
    try:
        yield study
    finally:
        study.server.stop()


@pytest.fixture
def reader(served: ServedStudy) -> Reader:
    return Reader(served.url)


@pytest.fixture
def new_browser():
    """A factory of headless Chromium sessions (Selenium), each with a fresh profile; all quit at teardown."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers, profiles = [], []

    def make():
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        profiles.append(tempfile.mkdtemp(prefix="vtt_chromium_"))
        options.add_argument(f"--user-data-dir={profiles[-1]}")
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        driver.set_page_load_timeout(20)
        driver.set_script_timeout(10)
        drivers.append(driver)
        return driver

    yield make
    for d in drivers:
        try:
            d.quit()
        except Exception:  # already closed by the test
            pass
    for p in profiles:
        shutil.rmtree(p, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite MLflow store for the session (creating a store takes seconds); tests use their own experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlruns.db"
