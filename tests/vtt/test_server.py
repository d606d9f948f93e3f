"""The web app over HTTP: sessions, CSRF, validation and error pages, idempotent answers, headers, the admin page."""

from __future__ import annotations

import sqlite3

import pytest
from vtt_helpers import Reader, field

ANSWER = {"answer": "real", "confidence": "3"}


def answers_in_db(served) -> list[tuple]:
    con = sqlite3.connect(served.db.path)
    try:
        return con.execute("SELECT answer, confidence, lesion, window_center, window_width FROM answers").fetchall()
    finally:
        con.close()


def test_a_reader_session_end_to_end(served, reader):
    page = reader.start("Ann")
    assert page.status_code == 200 and page.url.endswith("/read") and "0 of 10 answered" in page.text
    token = field(page.text, "item")
    image = reader.get(f"/image/{token}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert reader.get(f"/image/{token}?wc=40&ww=400").status_code == 200
    data = {"csrf": field(page.text, "csrf"), "item": token, **ANSWER, "lesion": "1", "window_center": "40",
            "window_width": "400"}  # fmt: skip
    page = reader.post("/answer", data)
    assert page.status_code == 200 and "1 of 10 answered" in page.text and field(page.text, "item") != token
    assert answers_in_db(served) == [("real", 3, 1, 40.0, 400.0)]
    again = reader.post("/answer", data)  # the same form sent twice (double Enter, back button): one answer
    assert again.status_code == 200 and len(answers_in_db(served)) == 1
    stopped = reader.post("/stop", {"csrf": field(page.text, "csrf")})
    assert stopped.status_code == 200 and "1 of 10 images answered and saved" in stopped.text
    assert reader.get("/read").url.endswith("/")  # session ended: back to the start page


def test_finishing_shows_the_end_page(served, reader):
    page = reader.start("Cy")
    for _ in range(10):
        page = reader.post("/answer", {"csrf": field(page.text, "csrf"), "item": field(page.text, "item"), **ANSWER})
    assert 'id="done"' in page.text and "all 10 images" in page.text
    assert 'id="done"' in reader.get("/read").text  # stays done
    assert len(answers_in_db(served)) == 10


@pytest.mark.parametrize(
    "change, status, message",
    [
        ({"confidence": "6"}, 400, "confidence: choose a confidence from 1 to 5"),
        ({"confidence": ""}, 400, "confidence: choose"),
        ({"answer": "fake"}, 400, "answer: choose one of"),
        ({"lesion": "maybe"}, 400, "lesion: must be 0 or 1"),
        ({"window_center": "1", "window_width": "-5"}, 400, "window width: must be &gt; 0"),
        ({"item": "unknowntoken123"}, 404, "not part of your reading list"),
        ({"csrf": ""}, 403, "security token is missing or wrong"),
        ({"csrf": "forged-token-value"}, 403, "security token is missing or wrong"),
        ({"csrf": "förged-tökén"}, 403, "security token is missing or wrong"),
    ],
    ids=["confidence-6", "confidence-missing", "answer-fake", "lesion-bad", "window-negative", "unknown-item",
         "csrf-missing", "csrf-forged", "csrf-non-ascii"],
)  # fmt: skip
def test_bad_answers_are_refused_and_nothing_is_stored(served, reader, change, status, message):
    page = reader.start("Dee")
    data = {"csrf": field(page.text, "csrf"), "item": field(page.text, "item"), **ANSWER, **change}
    response = reader.post("/answer", data)
    assert response.status_code == status and message in response.text
    assert answers_in_db(served) == []


def test_requests_without_a_session(served, reader):
    page = reader.start("Eve")
    token, csrf = field(page.text, "item"), field(page.text, "csrf")
    stranger = Reader(served.url)
    assert stranger.get(f"/image/{token}").status_code == 403
    refused = stranger.post("/answer", {"csrf": csrf, "item": token, **ANSWER})
    assert refused.status_code == 403 and "session has ended" in refused.text
    assert reader.get("/image/unknowntoken123").status_code == 404
    assert reader.get(f"/image/{token}?wc=40").status_code == 400  # a window needs both values
    assert answers_in_db(served) == []


def test_start_form_checks_its_token_and_the_name(served):
    reader = Reader(served.url)
    csrf = field(reader.get("/").text, "csrf")
    forged = reader.post("/start", {"csrf": "x" * 22, "name": "Ann"})
    assert forged.status_code == 403
    bad = reader.post("/start", {"csrf": csrf, "name": "<b>x</b>"})
    assert bad.status_code == 400 and "name: use letters" in bad.text and "<b>x</b>" not in bad.text
    too_big = reader.post("/start", {"csrf": csrf, "name": "a" * 5000})
    assert too_big.status_code == 413


def test_security_headers_on_every_reply(served, reader):
    page = reader.start("Fay")
    for response in (page, reader.get(f"/image/{field(page.text, 'item')}"), reader.get("/static/vtt.js"),
                     reader.get("/image/unknowntoken123")):  # fmt: skip
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "server" not in response.headers


def test_admin_page_needs_the_token_and_shows_progress(served, reader):
    page = reader.start("Gus")
    reader.post("/answer", {"csrf": field(page.text, "csrf"), "item": field(page.text, "item"), **ANSWER})
    assert reader.get("/admin").status_code == 403
    assert reader.get("/admin?token=" + "x" * 22).status_code == 403
    assert reader.get("/admin?token=ünïcode").status_code == 403
    admin = reader.get(f"/admin?token={served.admin_token}")
    assert admin.status_code == 200 and "Gus" in admin.text and "1 / 10" in admin.text
