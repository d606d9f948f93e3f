"""run_study: presets, nested runs in a sqlite MLflow store, resume skips finished runs, failed runs are redone."""

from __future__ import annotations

import pytest
from helpers import tiny_items

from monai_synth.apps.augmentation import study as st
from monai_synth.apps.augmentation.grids import (
    GRID_PRESETS,
    REDUCED_ROWS,
    TABLE2_ARMS,
    expand_grid,
    get_grid,
    increments_grid,
    reduced_grid,
    table2_grid,
)
from monai_synth.engines import classification as cls
from monai_synth.engines.classification import ClassifierRunConfig
from monai_synth.handlers.mlflow_extras import create_run, get_or_create_experiment, make_client

BASE = ClassifierRunConfig(network="resnet10", epochs=1, batch_size=8, lr=0.01, epoch_length=1)
DATA = st.StudyData(train=tiny_items(12, 1), val=tiny_items(8, 2), test=tiny_items(8, 3), synthetic=tiny_items(8, 4))


def test_table2_preset():
    grid = table2_grid(BASE)
    assert len(grid) == 18
    rows = {int(c.tags["table2_row"]): c for c in grid}
    assert sorted(rows) == list(range(1, 19))
    # spot checks against the printed table (geo, PT, FT%, WL)
    for row, geo, pt, ft, wl in [(1, 0, 0, 100, 0), (8, 1, 1, 100, 1), (12, 0, 1, 10, 1), (17, 0, 1, 0, 0),
                                 (18, 1, 1, 0, 0)]:  # fmt: skip
        c = rows[row]
        assert (c.geometric_aug, c.synthetic_pretrain, c.real_fraction, c.weighted_loss) == (
            bool(geo), bool(pt), ft / 100, bool(wl)
        )
    assert len({c.config_hash() for c in grid}) == 18
    assert all(c.epochs == 1 and c.network == "resnet10" for c in grid)  # base kept
    # TABLE2_ARMS is the one list the grids are built from
    assert [(int(c.tags["table2_row"]), c.geometric_aug, c.synthetic_pretrain, round(c.real_fraction * 100),
             c.weighted_loss) for c in grid] == [tuple(a) for a in TABLE2_ARMS]  # fmt: skip


def test_other_presets_and_grid_errors():
    inc = increments_grid(BASE)
    assert [c.synthetic_added for c in inc] == [0, 2500, 5000, 7500, 10000]
    g = expand_grid(BASE, geometric_aug=[False, True], seed=[0, 1, 2])
    assert len(g) == 6 and [c.seed for c in g[:3]] == [0, 1, 2]
    assert set(GRID_PRESETS) >= {"table2", "increments"}
    assert len(get_grid("table2", {"epochs": 3})) == 18
    assert [c.synthetic_added for c in get_grid("increments", BASE)] == [0, 2500, 5000, 7500, 10000]
    explicit = [BASE.replace(name="a")]
    assert get_grid(explicit) == explicit
    with pytest.raises(ValueError, match="must be one of"):
        get_grid("table9")
    with pytest.raises(ValueError, match="non-empty list"):
        get_grid([])
    with pytest.raises(ValueError, match="not a ClassifierRunConfig option"):
        expand_grid(BASE, learning_rate=[0.1])


@pytest.mark.parametrize("old, new", [("seed000_table2", "table2"), ("seed001_increments", "increments")])
def test_old_preset_names_still_work_with_a_warning(old, new):
    with pytest.warns(FutureWarning, match=new):
        grid = get_grid(old, BASE)
    assert [c.to_dict() for c in grid] == [c.to_dict() for c in get_grid(new, BASE)]


def test_reduced_grid_rows_and_options():
    grid = reduced_grid(epochs=2)
    assert [c.tags["table2_row"] for c in grid] == [str(r) for r in REDUCED_ROWS]
    assert [c.tags["table2_row"] for c in grid] == ["1", "5", "9", "13", "11", "15", "17", "18"]
    row17 = [c for c in grid if c.tags["table2_row"] == "17"][0]
    assert row17.synthetic_pretrain and row17.real_fraction == 0 and not row17.geometric_aug
    assert [c.name for c in reduced_grid(rows=[9, 11])] == ["row9", "row11"]


def test_run_key_depends_on_config_and_used_data():
    fp = DATA.fingerprints()
    assert st.run_key(BASE, fp) == st.run_key(BASE.replace(name="x"), fp)
    assert st.run_key(BASE, fp) != st.run_key(BASE.replace(seed=1), fp)
    assert st.run_key(BASE, fp) == st.run_key(BASE, {**fp, "synthetic": "other"})  # unused split
    assert st.run_key(BASE, fp) != st.run_key(BASE, {**fp, "train": "other"})


@pytest.fixture()
def counter(monkeypatch):
    calls = []
    orig = cls.train_classifier

    def counted(config, *a, **k):
        calls.append(config.name)
        return orig(config, *a, **k)

    monkeypatch.setattr(cls, "train_classifier", counted)
    return calls


def two_runs():
    return [BASE.replace(name="plain"), BASE.replace(name="geo", geometric_aug=True, weighted_loss=True)]


def test_study_resume_and_failure(tmp_path, counter, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    kw = dict(tracking_uri=uri, experiment="exp", output_dir=tmp_path, study_name="s", progress=False)
    # 1) the second run raises inside training -> marked FAILED, study stops with the error
    orig_stage = cls._train_stage

    def flaky(*a, **k):
        if a[3].name == "geo":
            raise RuntimeError("simulated crash")
        return orig_stage(*a, **k)

    monkeypatch.setattr(cls, "_train_stage", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        st.run_study(two_runs(), DATA, compare=False, **kw)
    client = make_client(uri)
    exp = client.get_experiment_by_name("exp").experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([exp])}
    assert runs["geo"].info.status == "FAILED" and runs["plain"].info.status == "FINISHED"
    assert runs["s"].info.status == "FAILED"  # parent
    assert runs["plain"].data.tags["mlflow.parentRunId"] == runs["s"].info.run_id
    assert counter == ["plain", "geo"]

    # a run left RUNNING by a dead process is marked KILLED on resume
    stale = create_run(client, get_or_create_experiment(client, "exp"), "ghost",
                       tags={st.STUDY_TAG: "s", st.ROLE_TAG: "child", st.RUN_KEY_TAG: "deadbeef"})  # fmt: skip

    # 2) resume: the finished run is skipped, the failed one redone
    monkeypatch.setattr(cls, "_train_stage", orig_stage)
    counter.clear()
    res = st.run_study(two_runs(), DATA, compare=False, **kw)
    assert counter == ["geo"]
    assert [r.skipped for r in res] == [True, False]
    assert client.get_run(stale).info.status == "KILLED"
    finished = [r for r in client.search_runs([exp]) if r.info.status == "FINISHED"]
    assert sorted(r.info.run_name for r in finished) == ["geo", "plain", "s"]  # parent resumed and finished
    skipped = res[0]
    assert skipped.test_metrics["accuracy"] == pytest.approx(runs["plain"].data.metrics["test_accuracy"])
    assert skipped.confusion_matrix is not None and skipped.confusion_matrix.sum() == 8

    # 3) a third call trains nothing
    counter.clear()
    res3 = st.run_study(two_runs(), DATA, **kw)
    assert counter == [] and all(r.skipped for r in res3)
    for a, b in zip(res, res3):
        assert a.test_metrics == pytest.approx(b.test_metrics)
    # comparison written and logged to the parent run
    assert (tmp_path / "comparison" / "comparison.csv").is_file()
    parent = [r for r in client.search_runs([exp]) if r.info.run_name == "s"][0]
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")} >= {
        "comparison/comparison.csv", "comparison/comparison.md", "comparison/comparison_bars.png"
    }  # fmt: skip


def test_duplicate_runs_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        st.run_study([BASE, BASE.replace(name="same")], DATA, tracking_uri=f"sqlite:///{tmp_path}/m.db",
                     output_dir=tmp_path, progress=False)  # fmt: skip


def test_scaled_increments_follow_the_paper_ratio():
    from monai_synth.apps.augmentation import scaled_increments

    assert scaled_increments(7500) == [0, 2500, 5000, 7500, 10000]  # seed 001, Table 1
    assert scaled_increments(30) == [0, 10, 20, 30, 40]
    assert scaled_increments(30, n_synthetic=24) == [0, 6, 12, 18, 24]  # shrunk to fit the synthetic set
    assert scaled_increments(2, steps=2) == [0, 1, 2]  # at least one image per step
    with pytest.raises(ValueError, match="cannot make 4 increments: synthesize at least 40"):
        scaled_increments(30, n_synthetic=3)
    with pytest.raises(ValueError, match="n_real >= 1"):
        scaled_increments(0)


def test_increments_refused_before_any_training(tmp_path, monkeypatch):
    """The +2500 arm used to raise after the +0 arm had trained: now the grid is checked up front."""
    calls = []
    monkeypatch.setattr(st, "train_classifier", lambda *a, **k: calls.append(1), raising=False)
    with pytest.raises(ValueError, match="needs 10 synthetic images but the study has 8.*nothing was trained"):
        st.run_study(increments_grid(BASE, (0, 10)), DATA, output_dir=tmp_path, progress=False)
    assert calls == [] and not (tmp_path / "mlruns.db").exists()
