"""Real-browser tests (headless Chromium via Selenium): a reader session with keyboard shortcuts, stopped by closing
the browser, resumed by name in a new browser and finished; the report matches; no file or folder name of any image
reaches the browser (page sources, every requested URL, every response header)."""

from __future__ import annotations

import json
import sqlite3

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from monai_synth.apps.vtt import build_report

WAIT = 10  # seconds, for any one page or image


def wait(driver) -> WebDriverWait:
    """A wait that polls through page loads: an element found on the old page goes stale when the next one arrives."""
    return WebDriverWait(driver, WAIT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))


class Recorder:
    """Everything the browser saw: page sources, requested URLs, response headers."""

    def __init__(self) -> None:
        self.pages: list[str] = []
        self.urls: list[str] = []
        self.headers: list[str] = []

    def take(self, driver) -> None:
        self.pages.append(driver.page_source)
        for entry in driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            params = msg.get("params", {})
            if msg.get("method") == "Network.requestWillBeSent":
                self.urls.append(params["request"]["url"])
            elif msg.get("method") == "Network.responseReceived":
                self.urls.append(params["response"]["url"])
                self.headers += [f"{k}: {v}" for k, v in params["response"].get("headers", {}).items()]

    def leaks(self, secrets: list[str]) -> list[str]:
        seen = "\n".join(self.pages + self.urls + self.headers).lower()
        return [s for s in secrets if s.lower() in seen]


def token_of(driver) -> str:
    return driver.find_element(By.NAME, "item").get_attribute("value")


def image_loaded(driver) -> bool:
    script = "const i = document.getElementById('study-image'); return i.complete && i.naturalWidth > 0"
    return driver.execute_script(script)


def keys(driver, text: str) -> None:
    ActionChains(driver).send_keys(text).perform()


def n_answers(served) -> int:
    con = sqlite3.connect(served.db.path)
    try:
        return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    finally:
        con.close()


def start(driver, served, name: str, seen: Recorder) -> None:
    driver.get(served.url + "/")
    seen.take(driver)
    box = driver.find_element(By.ID, "name")
    box.send_keys(name)
    box.send_keys(Keys.ENTER)
    wait(driver).until(lambda d: d.find_elements(By.ID, "study-image") or d.find_elements(By.ID, "done"))


def answer_with_keys(driver, served, given: dict, count: int, seen: Recorder) -> None:
    """Answer ``count`` images with R / S, 1-5, L and Enter; check each answer is in the database when shown."""
    for _ in range(count):
        wait(driver).until(image_loaded)
        token, before = token_of(driver), n_answers(served)
        answer = "synthetic" if len(given) % 3 else "real"
        confidence = 1 + len(given) % 5
        keys(driver, ("s" if answer == "synthetic" else "r") + str(confidence) + ("l" if len(given) % 2 else ""))
        seen.take(driver)
        keys(driver, Keys.ENTER)
        wait(driver).until(lambda d, old=token: d.find_elements(By.ID, "done") or token_of(d) != old)
        given[token] = (answer, confidence, len(given) % 2)
        assert n_answers(served) == before + 1  # committed before the next page was served
        seen.take(driver)


def test_read_stop_resume_finish_and_report(served, new_browser):
    seen, given = Recorder(), {}
    first = new_browser()
    start(first, served, "Ann Reader", seen)
    wait(first).until(image_loaded)
    # Enter without an answer: nothing is sent, the page says what is missing
    keys(first, Keys.ENTER)
    assert "Choose real or synthetic" in first.find_element(By.ID, "status").text and n_answers(served) == 0
    # a window preset re-renders the image on the server; the answer records the window in use
    first.find_element(By.CSS_SELECTOR, "button.preset[data-center='-600.0']").click()
    wait(first).until(lambda d: "wc=-600" in d.find_element(By.ID, "study-image").get_attribute("src"))
    wait(first).until(image_loaded)
    answer_with_keys(first, served, given, 4, seen)
    assert first.find_element(By.ID, "progress-text").text == "4 of 10 answered"
    assert first.find_element(By.ID, "progress").get_attribute("value") == "4"
    first.quit()  # the reader closes the browser (the session cookie goes with it)

    second = new_browser()
    start(second, served, "ann reader", seen)  # the same name (any case) resumes where the reader stopped
    assert second.find_element(By.ID, "progress-text").text == "4 of 10 answered"
    answer_with_keys(second, served, given, 6, seen)
    assert "You have answered all 10 images" in second.find_element(By.ID, "done").text

    # the database and the report hold exactly the answers given
    con = sqlite3.connect(served.db.path)
    rows = con.execute("SELECT i.token, a.answer, a.confidence, a.lesion, a.window_center FROM answers a "
                       "JOIN items i ON i.id = a.item_id ORDER BY a.position").fetchall()  # fmt: skip
    con.close()
    assert {r[0]: r[1:4] for r in rows} == given
    assert rows[0][4] == -600.0 and all(r[4] is None for r in rows[1:])
    report = build_report(served.db)
    (ann,) = report["readers"]
    correct = sum(served.truth_of(t) == a for t, (a, _, _) in given.items())
    assert (ann["reader"], ann["n"], ann["correct"], ann["complete"]) == ("Ann Reader", 10, correct, True)
    assert [c["n"] for c in ann["calibration"]] == [2, 2, 2, 2, 2]
    assert ann["lesion"]["by_truth"]["real"]["n"] + ann["lesion"]["by_truth"]["synthetic"]["n"] == 10

    # blinding: no file or folder name of any image, no path, no DICOM identifier ever reached the browser
    second.get(f"{served.url}/admin?token={served.admin_token}")
    seen.take(second)
    assert any("/image/" in u for u in seen.urls) and len(seen.pages) > 20
    assert "content-type: image/png" in seen.headers
    visible = ["Ann Reader", "/static/vtt.js", "no-referrer"]  # the scan finds what is on the pages, URLs, headers
    assert seen.leaks(visible) == visible
    assert seen.leaks(served.files.secrets) == []
