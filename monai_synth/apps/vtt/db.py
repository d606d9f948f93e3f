"""The study database (SQLite): the study set, readers and their orders, sessions, and one row per answer.

Every answer is committed in its own transaction before the reader's browser is answered, so a closed tab, a killed
server or a power cut loses nothing that a reader saw acknowledged (SQLite ``synchronous = FULL``, rollback journal).
``UNIQUE (reader_id, item_id)`` makes answering twice (a double key press, a resent form, the back button) a no-op:
the first answer stands. The database file (with SQLite's transient ``-journal`` beside it) is the only file the
server writes. Tables (docs/reader_study.md):

=========  ==========================================================================================================
study      settings: schema version, seed, n, whether the lesion question is asked, fingerprint of the inputs
items      the study set: opaque token, path, truth (real / synthetic), label
readers    name as typed and its case-folded key
sequence   each reader's order of the study set (position -> item) and when each item was first shown
sessions   SHA-256 of the session cookie, the reader, the form (CSRF) token
answers    reader, item, answer, confidence 1-5, lesion (NULL when not asked), the window in use, time
=========  ==========================================================================================================
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai_synth.apps.vtt.items import StudyItem
from monai_synth.apps.vtt.sequence import new_token, reader_order
from monai_synth.apps.vtt.validation import ReaderName

__all__ = [
    "SCHEMA_VERSION",
    "Answer",
    "NextItem",
    "ReaderProgress",
    "Session",
    "StudyDB",
    "StudyMismatchError",
    "UnknownItemError",
    "inputs_fingerprint",
]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    truth TEXT NOT NULL CHECK (truth IN ('real', 'synthetic')),
    label TEXT
);
CREATE TABLE readers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE sequence (
    reader_id INTEGER NOT NULL REFERENCES readers (id),
    position INTEGER NOT NULL,
    item_id INTEGER NOT NULL REFERENCES items (id),
    shown_at TEXT,
    PRIMARY KEY (reader_id, position),
    UNIQUE (reader_id, item_id)
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    reader_id INTEGER NOT NULL REFERENCES readers (id),
    csrf TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE answers (
    id INTEGER PRIMARY KEY,
    reader_id INTEGER NOT NULL REFERENCES readers (id),
    item_id INTEGER NOT NULL REFERENCES items (id),
    position INTEGER NOT NULL,
    answer TEXT NOT NULL CHECK (answer IN ('real', 'synthetic')),
    confidence INTEGER NOT NULL CHECK (confidence BETWEEN 1 AND 5),
    lesion INTEGER CHECK (lesion IN (0, 1)),
    window_center REAL,
    window_width REAL CHECK (window_width IS NULL OR window_width > 0),
    answered_at TEXT NOT NULL,
    UNIQUE (reader_id, item_id)
);
"""
_TABLES = {"study", "items", "readers", "sequence", "sessions", "answers"}


class StudyMismatchError(ValueError):
    """The database holds another study (other images, ``n``, seed or lesion question) than the one asked for."""


class UnknownItemError(KeyError):
    """A token that names no item of the reader's sequence (HTTP 404)."""


@dataclass(frozen=True)
class Session:
    """A reader's browser session."""

    reader_id: int
    reader_name: str
    csrf: str


@dataclass(frozen=True)
class NextItem:
    """The item a reader reads next and where they are (``answered`` of ``total``)."""

    token: str
    position: int
    answered: int
    total: int


@dataclass(frozen=True)
class ReaderProgress:
    """One row of the admin page."""

    name: str
    answered: int
    total: int
    started_at: str
    last_answer_at: str | None


@dataclass(frozen=True)
class Answer:
    """One answer joined with its item (what the report reads)."""

    reader: str
    item_id: int
    truth: str
    label: str | None
    answer: str
    confidence: int
    lesion: int | None
    position: int
    answered_at: str


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _has_no_tables(path: Path) -> bool:
    """True for an empty file or an SQLite database without tables (a creation that never committed)."""
    if path.stat().st_size == 0:
        return True
    try:
        con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            return con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return False  # not a database: the constructor says so


def inputs_fingerprint(items: Sequence[StudyItem]) -> str:
    """SHA-256 of the sorted (truth, path, label) of every candidate image: tells whether a restart got other inputs."""
    rows = sorted((it.truth, it.path, it.label or "") for it in items)
    return hashlib.sha256(json.dumps(rows).encode("utf-8")).hexdigest()


class StudyDB:
    """The SQLite database of one reader study.

    Args:
        path: the database file. :meth:`create_or_open` creates it; the constructor only opens an existing one.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a reader-study database of this schema version.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"study database {str(self.path)!r} does not exist; start a study with `serve`.")
        self._check_schema()

    # ----------------------------------------------------------------------------------------- connections
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("PRAGMA synchronous = FULL")
        return con

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), rolled back on any exception."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _check_schema(self) -> None:
        try:
            with self._read() as con:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                version = None
                if "study" in tables:
                    row = con.execute("SELECT value FROM study WHERE key = 'schema_version'").fetchone()
                    version = None if row is None else int(row[0])
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{str(self.path)!r} is not an SQLite database ({e}); give a new --db path.") from e
        if not _TABLES <= tables or version != SCHEMA_VERSION:
            raise ValueError(
                f"{str(self.path)!r} is not a reader-study database (schema version {SCHEMA_VERSION}); give a new --db "
                "path (serve creates it)."
            )

    # ----------------------------------------------------------------------------------------- creation
    @classmethod
    def create_or_open(
        cls,
        path: str | os.PathLike,
        study_set: Sequence[StudyItem],
        fingerprint: str,
        seed: int,
        n: int | None,
        ask_lesion: bool,
    ) -> StudyDB:
        """Create the database with ``study_set`` (one transaction), or open it and check it holds the same study.

        Args:
            path: the database file; its folder must exist.
            study_set: the drawn study set (stored only when the database is new).
            fingerprint: :func:`inputs_fingerprint` of every candidate image.
            seed: the study seed.
            n: the requested images per reader (``None``: the largest balanced set).
            ask_lesion: whether readers are asked whether a lesion is present.

        Raises:
            FileNotFoundError: the folder of ``path`` does not exist.
            StudyMismatchError: an existing database holds another study (the message says what differs).
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"the folder of --db {str(path)!r} does not exist; create it first.")
        settings = {
            "schema_version": str(SCHEMA_VERSION),
            "seed": str(int(seed)),
            "n_requested": "max" if n is None else str(int(n)),
            "ask_lesion": "1" if ask_lesion else "0",
            "inputs_fingerprint": fingerprint,
        }
        if not path.exists() or _has_no_tables(path):
            cls._initialize(path, study_set, settings)
        db = cls(path)
        stored = db.settings()
        differ = sorted(k for k, v in settings.items() if stored.get(k) != v)
        if differ:
            what = ", ".join(f"{k} (stored {stored.get(k)!r}, asked {settings[k]!r})" for k in differ)
            raise StudyMismatchError(
                f"study database {str(path)!r} holds another study: {what}. Restart with the same --real, --synthetic, "
                "--n, --seed and --ask-lesion to resume it, or give a new --db path for a new study."
            )
        return db

    @staticmethod
    def _initialize(path: Path, study_set: Sequence[StudyItem], settings: dict[str, str]) -> None:
        con = sqlite3.connect(path, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous = FULL")
            con.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            con.executemany("INSERT INTO study (key, value) VALUES (?, ?)", [*settings.items(), ("created_at", _now())])
            con.executemany(
                "INSERT INTO items (token, path, truth, label) VALUES (?, ?, ?, ?)",
                [(new_token(), it.path, it.truth, it.label) for it in study_set],
            )
            con.execute("COMMIT")
        finally:
            con.close()

    # ----------------------------------------------------------------------------------------- study
    def settings(self) -> dict[str, str]:
        """The ``study`` table as a dict."""
        with self._read() as con:
            return {r["key"]: r["value"] for r in con.execute("SELECT key, value FROM study")}

    @property
    def ask_lesion(self) -> bool:
        """Whether readers are asked whether a lesion is present."""
        return self.settings().get("ask_lesion") == "1"

    def items(self) -> list[dict[str, Any]]:
        """Every item of the study set: ``{"id", "token", "path", "truth", "label"}``."""
        with self._read() as con:
            return [dict(r) for r in con.execute("SELECT id, token, path, truth, label FROM items ORDER BY id")]

    # ----------------------------------------------------------------------------------------- readers
    def reader_for_name(self, name: ReaderName) -> int:
        """The id of the reader called ``name`` (case-insensitive); a new reader gets an order of the study set."""
        with self._write() as con:
            row = con.execute("SELECT id FROM readers WHERE name_key = ?", (name.key,)).fetchone()
            if row is not None:
                return int(row["id"])
            seed = int(con.execute("SELECT value FROM study WHERE key = 'seed'").fetchone()[0])
            item_ids = [int(r[0]) for r in con.execute("SELECT id FROM items ORDER BY id")]
            cur = con.execute(
                "INSERT INTO readers (name, name_key, created_at) VALUES (?, ?, ?)", (name.display, name.key, _now())
            )
            reader_id = int(cur.lastrowid)
            order = reader_order(len(item_ids), seed, name.key)
            con.executemany(
                "INSERT INTO sequence (reader_id, position, item_id) VALUES (?, ?, ?)",
                [(reader_id, pos, item_ids[i]) for pos, i in enumerate(order)],
            )
            return reader_id

    def create_session(self, reader_id: int) -> tuple[str, str]:
        """A new session of ``reader_id``: ``(cookie token, CSRF form token)``; only the cookie's hash is kept."""
        token, csrf = new_token(), new_token()
        with self._write() as con:
            con.execute(
                "INSERT INTO sessions (token_hash, reader_id, csrf, created_at) VALUES (?, ?, ?, ?)",
                (_hash(token), reader_id, csrf, _now()),
            )
        return token, csrf

    def session(self, token: str | None) -> Session | None:
        """The session of a cookie token, ``None`` for a missing or unknown one."""
        if not token:
            return None
        with self._read() as con:
            row = con.execute(
                "SELECT s.reader_id, r.name, s.csrf FROM sessions s JOIN readers r ON r.id = s.reader_id "
                "WHERE s.token_hash = ?",
                (_hash(token),),
            ).fetchone()
        return None if row is None else Session(int(row[0]), str(row[1]), str(row[2]))

    def end_session(self, token: str) -> None:
        """Forget a session (the reader stopped); their answers stay."""
        with self._write() as con:
            con.execute("DELETE FROM sessions WHERE token_hash = ?", (_hash(token),))

    # ----------------------------------------------------------------------------------------- reading
    def next_item(self, reader_id: int) -> NextItem | None:
        """The first unanswered item of the reader's order (marked as shown), ``None`` when all are answered."""
        with self._write() as con:
            total, answered = con.execute(
                "SELECT (SELECT COUNT(*) FROM sequence WHERE reader_id = ?), "
                "(SELECT COUNT(*) FROM answers WHERE reader_id = ?)",
                (reader_id, reader_id),
            ).fetchone()
            row = con.execute(
                "SELECT s.position, i.token FROM sequence s JOIN items i ON i.id = s.item_id "
                "LEFT JOIN answers a ON a.reader_id = s.reader_id AND a.item_id = s.item_id "
                "WHERE s.reader_id = ? AND a.id IS NULL ORDER BY s.position LIMIT 1",
                (reader_id,),
            ).fetchone()
            if row is None:
                return None
            con.execute(
                "UPDATE sequence SET shown_at = ? WHERE reader_id = ? AND position = ? AND shown_at IS NULL",
                (_now(), reader_id, row["position"]),
            )
        return NextItem(str(row["token"]), int(row["position"]), int(answered), int(total))

    def progress_of(self, reader_id: int) -> tuple[int, int]:
        """``(answered, total)`` of one reader."""
        with self._read() as con:
            return tuple(
                int(v)
                for v in con.execute(
                    "SELECT (SELECT COUNT(*) FROM answers WHERE reader_id = ?), "
                    "(SELECT COUNT(*) FROM sequence WHERE reader_id = ?)",
                    (reader_id, reader_id),
                ).fetchone()
            )

    def item_path(self, reader_id: int, token: str) -> tuple[int, str]:
        """``(item id, path)`` of an item of the reader's sequence.

        Raises:
            UnknownItemError: the token names no item of this reader's sequence.
        """
        with self._read() as con:
            item_id, path, _ = _sequence_item(con, reader_id, token)
        return item_id, path

    def record_answer(
        self,
        reader_id: int,
        token: str,
        answer: str,
        confidence: int,
        lesion: int | None = None,
        window: tuple[float, float] | None = None,
    ) -> bool:
        """Commit one answer in its own transaction; ``False`` (nothing changed) when the item was answered before.

        Raises:
            UnknownItemError: the token names no item of this reader's sequence.
        """
        with self._write() as con:
            item_id, _, position = _sequence_item(con, reader_id, token)
            center, width = window if window is not None else (None, None)
            cur = con.execute(
                "INSERT OR IGNORE INTO answers (reader_id, item_id, position, answer, confidence, lesion, "
                "window_center, window_width, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (reader_id, item_id, position, answer, int(confidence), lesion, center, width, _now()),
            )
            return cur.rowcount == 1

    # ----------------------------------------------------------------------------------------- admin and report
    def progress(self) -> list[ReaderProgress]:
        """Progress of every reader, in the order they started."""
        rows = self._rows(
            "SELECT r.name, r.created_at, "
            "(SELECT COUNT(*) FROM answers a WHERE a.reader_id = r.id) AS answered, "
            "(SELECT COUNT(*) FROM sequence s WHERE s.reader_id = r.id) AS total, "
            "(SELECT MAX(answered_at) FROM answers a WHERE a.reader_id = r.id) AS last "
            "FROM readers r ORDER BY r.id"
        )
        return [
            ReaderProgress(r["name"], int(r["answered"]), int(r["total"]), r["created_at"], r["last"]) for r in rows
        ]

    def answers(self) -> list[Answer]:
        """Every answer with its item's truth and label, by reader then position."""
        sql = (
            "SELECT r.name, a.item_id, i.truth, i.label, a.answer, a.confidence, a.lesion, a.position, a.answered_at "
            "FROM answers a JOIN readers r ON r.id = a.reader_id JOIN items i ON i.id = a.item_id "
            "ORDER BY r.id, a.position"
        )
        return [Answer(*tuple(r)) for r in self._rows(sql)]

    def _rows(self, sql: str) -> list:
        with self._read() as con:
            return con.execute(sql).fetchall()


def _sequence_item(con, reader_id: int, token: str) -> tuple[int, str, int]:
    """``(item id, path, position)`` of the item ``token`` in the reader's sequence.

    Raises:
        UnknownItemError: the token names no item of this reader's sequence.
    """
    row = con.execute(
        "SELECT i.id, i.path, s.position FROM items i JOIN sequence s ON s.item_id = i.id "
        "WHERE s.reader_id = ? AND i.token = ?",
        (reader_id, token),
    ).fetchone()
    if row is None:
        raise UnknownItemError(token)
    return int(row[0]), str(row[1]), int(row[2])
