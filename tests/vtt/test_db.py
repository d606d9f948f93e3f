"""The study database: one transaction per answer, idempotent answers, resume, refusing another study's database."""

from __future__ import annotations

import sqlite3

import pytest

from monai_synth.apps.vtt import REAL, StudyDB, StudyMismatchError, UnknownItemError, open_study, parse_reader_name


@pytest.fixture
def db(study_files, tmp_path):
    return open_study(study_files.real, study_files.synthetic, tmp_path / "study.db", n=6, seed=1, ask_lesion=True)


def count_answers(path) -> int:
    con = sqlite3.connect(path)  # an independent connection: sees only what was committed
    try:
        return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    finally:
        con.close()


def test_created_with_a_balanced_set_and_settings(db, tmp_path):
    items = db.items()
    assert len(items) == 6 and sum(it["truth"] == REAL for it in items) == 3
    assert len({it["token"] for it in items}) == 6
    settings = db.settings()
    assert (settings["seed"], settings["n_requested"], settings["ask_lesion"]) == ("1", "6", "1")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["study.db"]  # nothing else written


def test_each_answer_is_committed_at_once_and_only_once(db):
    reader = db.reader_for_name(parse_reader_name("Ann"))
    first = db.next_item(reader)
    assert (first.answered, first.total, first.position) == (0, 6, 0)
    assert db.record_answer(reader, first.token, "real", 4, lesion=1, window=(40.0, 400.0)) is True
    assert count_answers(db.path) == 1  # committed before record_answer returned
    assert db.record_answer(reader, first.token, "synthetic", 1, lesion=0) is False  # the first answer stands
    assert count_answers(db.path) == 1
    (answer,) = db.answers()
    assert (answer.reader, answer.answer, answer.confidence, answer.lesion) == ("Ann", "real", 4, 1)
    assert db.next_item(reader).position == 1


def test_resume_by_name_keeps_the_order_and_the_answers(db, study_files, tmp_path):
    ann = db.reader_for_name(parse_reader_name("Ann"))
    order = []
    for _ in range(3):
        item = db.next_item(ann)
        order.append(item.token)
        db.record_answer(ann, item.token, "synthetic", 2, lesion=0)
    # the server stops; a new process reopens the same database with the same inputs
    again = open_study(study_files.real, study_files.synthetic, db.path, n=6, seed=1, ask_lesion=True)
    same = again.reader_for_name(parse_reader_name("  ANN "))  # case and spaces do not make a new reader
    assert same == ann
    item = again.next_item(same)
    assert (item.answered, item.position) == (3, 3) and item.token not in order
    bob = again.reader_for_name(parse_reader_name("Bob"))
    assert bob != ann and again.progress_of(bob) == (0, 6)
    assert [p.name for p in again.progress()] == ["Ann", "Bob"]


def test_unknown_or_foreign_tokens_are_refused(db):
    ann = db.reader_for_name(parse_reader_name("Ann"))
    with pytest.raises(UnknownItemError):
        db.record_answer(ann, "not-a-token", "real", 3)
    with pytest.raises(UnknownItemError):
        db.item_path(ann, "not-a-token")
    assert count_answers(db.path) == 0


def test_sessions_store_only_a_hash(db):
    ann = db.reader_for_name(parse_reader_name("Ann"))
    token, csrf = db.create_session(ann)
    assert db.session(token).reader_id == ann and db.session(token).csrf == csrf
    con = sqlite3.connect(db.path)
    assert con.execute("SELECT COUNT(*) FROM sessions WHERE token_hash = ?", (token,)).fetchone()[0] == 0
    con.close()
    db.end_session(token)
    assert db.session(token) is None and db.session(None) is None


@pytest.mark.parametrize(
    "change, what",
    [({"n": 4}, "n_requested"), ({"seed": 2}, "seed"), ({"ask_lesion": False}, "ask_lesion")],
    ids=["n", "seed", "lesion"],
)
def test_reopening_with_other_settings_is_refused(db, study_files, change, what):
    kwargs = {"n": 6, "seed": 1, "ask_lesion": True, **change}
    with pytest.raises(StudyMismatchError, match=f"holds another study: {what}"):
        open_study(study_files.real, study_files.synthetic, db.path, **kwargs)


def test_reopening_with_other_images_is_refused(db, study_files):
    (study_files.synthetic / "synthotterimage0.png").unlink()
    with pytest.raises(StudyMismatchError, match="inputs_fingerprint"):
        open_study(study_files.real, study_files.synthetic, db.path, n=6, seed=1, ask_lesion=True)


@pytest.mark.parametrize(
    "content, match",
    [(b"not a database at all" * 10, "not an SQLite database"), (None, "not a reader-study database")],
    ids=["garbage", "other-sqlite"],
)
def test_other_files_are_not_taken_for_a_study(tmp_path, content, match):
    path = tmp_path / "other.db"
    if content is None:
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE t (x)")
        con.close()
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        StudyDB(path)


def test_missing_database_and_folder(tmp_path, study_files):
    with pytest.raises(FileNotFoundError, match="does not exist; start a study with `serve`"):
        StudyDB(tmp_path / "nope.db")
    with pytest.raises(FileNotFoundError, match="the folder of --db .*nofolder"):
        open_study(study_files.real, study_files.synthetic, tmp_path / "nofolder" / "s.db")
