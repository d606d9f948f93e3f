"""``python -m monai_synth.vtt``: user errors name the path; the report command; a killed server loses no answer."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from vtt_helpers import Reader, field

from monai_synth.apps.vtt.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--real", "{tmp}/missing"], "real images: '{tmp}/missing' does not exist"),
        (["--real", "{tmp}/empty"], "no PNG, JPEG or DICOM images under '{tmp}/empty'"),
        (["--n", "7"], "must be an even integer"),
        (["--n", "100"], "the largest balanced n is 10"),
        (["--db", "{tmp}/nofolder/s.db"], "the folder of --db '{tmp}/nofolder/s.db' does not exist"),
    ],
    ids=["missing-path", "empty-folder", "odd-n", "too-many", "db-folder"],
)
def test_serve_user_errors_print_one_line_and_exit_2(study_files, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    base = {"--real": str(study_files.real), "--synthetic": str(study_files.synthetic), "--db": str(tmp_path / "s.db")}
    argv = ["serve"]
    for key, value in {**base, **dict(zip(args[::2], args[1::2]))}.items():
        argv += [key, value.format(tmp=tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.format(tmp=tmp_path) in err and err.count("\n") == 1


def test_report_command(study_files, tmp_path, capsys):
    from monai_synth.apps.vtt import open_study

    open_study(study_files.real, study_files.synthetic, tmp_path / "s.db")
    assert main(["report", "--db", str(tmp_path / "s.db"), "--out", str(tmp_path / "rep")]) == 0
    assert "reader_study.json" in capsys.readouterr().out
    assert json.loads((tmp_path / "rep" / "reader_study.json").read_text())["n_answers"] == 0
    assert main(["report", "--db", str(tmp_path / "none.db"), "--out", str(tmp_path / "rep")]) == 2
    assert "none.db' does not exist" in capsys.readouterr().err


def _lines(proc: subprocess.Popen) -> queue.Queue:
    q: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [q.put(line) for line in proc.stdout], daemon=True).start()
    return q


def test_killed_server_keeps_every_acknowledged_answer(study_files, tmp_path):
    db = tmp_path / "study.db"
    cmd = [sys.executable, "-m", "monai_synth.vtt", "serve", "--real", str(study_files.real), "--synthetic",
           str(study_files.synthetic), "--db", str(db), "--port", "0", "--n", "6"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines, out, deadline = _lines(proc), "", time.monotonic() + 90
        while "admin:" not in out and time.monotonic() < deadline:
            try:
                out += lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, out
        url = re.search(r"readers: (http://127\.0\.0\.1:\d+)/", out).group(1)
        admin = re.search(r"admin: +(\S+)", out).group(1)
        reader = Reader(url)
        page = reader.start("Kim")
        for _ in range(2):
            page = reader.post("/answer", {"csrf": field(page.text, "csrf"), "item": field(page.text, "item"),
                                           "answer": "synthetic", "confidence": "2"})  # fmt: skip
            assert page.status_code == 200
        assert "Kim" in reader.http.get(admin, timeout=10).text
    finally:
        proc.send_signal(signal.SIGKILL)  # no shutdown code runs: only what was committed survives
        proc.wait(timeout=10)
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 2
    con.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["study.db"]  # only the database written
