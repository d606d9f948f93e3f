"""The report: values from known answers, the files, an empty study, the MLflow run."""

from __future__ import annotations

import csv
import json

import pytest
from scipy.stats import binomtest

from monai_synth.apps.vtt import build_report, open_study, parse_reader_name, write_report
from monai_synth.apps.vtt.report import CALIBRATION_CSV, CHART_PNG, READERS_CSV, REPORT_JSON


@pytest.fixture
def db(study_files, tmp_path):
    return open_study(study_files.real, study_files.synthetic, tmp_path / "study.db", n=10, seed=0)


def read(db, name: str, rule, confidence=lambda truth: 3, limit: int | None = None) -> list[tuple[str, str]]:
    """Answer as reader ``name`` with ``rule(truth) -> answer``; returns the (truth, answer) pairs given."""
    truth_of = {it["token"]: it["truth"] for it in db.items()}
    reader, given = db.reader_for_name(parse_reader_name(name)), []
    while (item := db.next_item(reader)) is not None and (limit is None or len(given) < limit):
        truth = truth_of[item.token]
        answer = rule(truth, len(given))
        db.record_answer(reader, item.token, answer, confidence(truth))
        given.append((truth, answer))
    return given


def always(answer):
    return lambda truth, i: answer


def test_per_reader_pooled_and_cohen_kappa(db):
    read(db, "Ann", lambda t, i: t, confidence=lambda t: 5)  # perfect reader, always certain
    read(db, "Bob", always("real"), confidence=lambda t: 1)  # calls everything real
    report = build_report(db)
    ann, bob = report["readers"]
    assert (ann["reader"], ann["n"], ann["correct"], ann["complete"]) == ("Ann", 10, 10, True)
    assert ann["p_value"] == pytest.approx(binomtest(10, 10).pvalue) == pytest.approx(2 / 1024)
    assert (ann["sensitivity"], ann["specificity"]) == (1.0, 1.0)
    assert (bob["correct"], bob["tp"], bob["fn"], bob["tn"], bob["fp"]) == (5, 0, 5, 5, 0)
    assert (bob["sensitivity"], bob["specificity"], bob["p_value"]) == (0.0, 1.0, 1.0)
    pooled = report["pooled"]
    assert (pooled["n"], pooled["correct"]) == (20, 15) and pooled["p_value"] == pytest.approx(binomtest(15, 20).pvalue)
    assert [c["n"] for c in pooled["calibration"]] == [10, 0, 0, 0, 10]
    assert pooled["calibration"][0]["accuracy"] == 0.5 and pooled["calibration"][4]["accuracy"] == 1.0
    # Cohen: Ann answers 5 real + 5 synthetic, Bob 10 real; p_o = 0.5, p_e = 0.5 * 1 + 0.5 * 0 = 0.5 -> kappa 0
    assert report["agreement"] == {"method": "cohen", "kappa": 0.0, "n_items": 10, "readers": ["Ann", "Bob"]}


def test_fleiss_kappa_on_items_read_by_all(db):
    read(db, "Ann", always("real"))
    read(db, "Bob", lambda t, i: t)
    read(db, "Cy", lambda t, i: t)
    # 5 real items: 3 x real -> P_i = 1; 5 synthetic: 1 real + 2 synthetic -> P_i = (1 + 4 - 3) / 6 = 1/3
    # P_bar = 2/3, p = (2/3, 1/3), P_e = 5/9, kappa = (2/3 - 5/9) / (4/9) = 0.25
    agreement = build_report(db)["agreement"]
    assert (agreement["method"], agreement["n_items"]) == ("fleiss", 10)
    assert agreement["kappa"] == pytest.approx(0.25)
    read(db, "Dee", lambda t, i: t, limit=4)  # a fourth reader stopped after 4 images: agreement on those 4 only
    report = build_report(db)
    assert report["agreement"]["n_items"] == 4 and report["agreement"]["readers"] == ["Ann", "Bob", "Cy", "Dee"]
    assert [r["complete"] for r in report["readers"]] == [True, True, True, False]


def test_files_match_the_answers(db, tmp_path):
    given = read(db, "Ann", lambda t, i: "synthetic" if i % 3 else t, confidence=lambda t: 2)
    correct = sum(t == a for t, a in given)
    files = write_report(db.path, tmp_path / "report")
    assert [p.name for p in files[:4]] == [REPORT_JSON, READERS_CSV, CALIBRATION_CSV, CHART_PNG]
    assert files.run_id is None
    doc = json.loads(files.json.read_text())
    assert doc["n_answers"] == 10 and doc["readers"][0]["correct"] == correct
    rows = list(csv.DictReader(files.readers_csv.open()))
    assert [r["reader"] for r in rows] == ["Ann", "(pooled)"] and int(rows[0]["correct"]) == correct
    assert float(rows[0]["p_value"]) == pytest.approx(binomtest(correct, 10).pvalue)
    calib = list(csv.DictReader(files.calibration_csv.open()))
    assert len(calib) == 10 and calib[1]["n"] == "10" and calib[0]["accuracy"] == ""
    assert files.chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_study_gives_an_empty_report(db, tmp_path):
    files = write_report(db.path, tmp_path / "empty")
    doc = json.loads(files.json.read_text())
    assert (doc["n_readers"], doc["n_answers"], doc["readers"]) == (0, 0, [])
    assert doc["pooled"]["accuracy"] is None and doc["agreement"]["kappa"] is None
    assert [r["reader"] for r in csv.DictReader(files.readers_csv.open())] == ["(pooled)"]
    assert files.chart.stat().st_size > 0


def test_mlflow_run_holds_the_files_and_numbers(db, tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    read(db, "Ann", lambda t, i: t)
    files = write_report(db.path, tmp_path / "report", tracking_uri=mlflow_uri, experiment="vtt_report")
    client = MlflowClient(mlflow_uri)
    run = client.get_run(files.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["pooled.accuracy"] == 1.0
    assert run.data.metrics["reader.Ann.accuracy"] == 1.0 and run.data.params["n_items"] == "10"
    assert {a.path for a in client.list_artifacts(files.run_id)} == {REPORT_JSON, READERS_CSV, CALIBRATION_CSV,
                                                                     CHART_PNG}  # fmt: skip


def test_report_needs_an_existing_study_database(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.db' does not exist"):
        write_report(tmp_path / "nope.db", tmp_path / "out")
