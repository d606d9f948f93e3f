"""run_study: presets, nested runs in a sqlite MLflow store, resume skips finished runs, failed runs are redone."""

from __future__ import annotations

import numpy as np
import pytest

from monai_synth import study as st
from monai_synth.engines import classification as cls
from monai_synth.engines.classification import ClassifierRunConfig
from monai_synth.handlers.mlflow_extras import create_run, get_or_create_experiment, make_client


def tiny_items(n: int, seed: int, size: int = 16) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = (rng.random((1, size, size)) * 0.3).astype(np.float32)
        if i % 2:
            img[:, 4:12, 4:12] += 0.6
        out.append({"image": img, "label": i % 2})
    return out


BASE = ClassifierRunConfig(network="resnet10", epochs=1, batch_size=8, lr=0.01, epoch_length=1)
DATA = st.StudyData(train=tiny_items(12, 1), val=tiny_items(8, 2), test=tiny_items(8, 3), synthetic=tiny_items(8, 4))


def test_seed000_table2_preset():
    grid = st.seed000_table2(BASE)
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


def test_other_presets_and_grid_errors():
    inc = st.seed001_increments(BASE)
    assert [c.synthetic_added for c in inc] == [0, 2500, 5000, 7500, 10000]
    g = st.expand_grid(BASE, geometric_aug=[False, True], seed=[0, 1, 2])
    assert len(g) == 6 and [c.seed for c in g[:3]] == [0, 1, 2]
    assert len(st.get_grid("seed000_table2", {"epochs": 3})) == 18
    with pytest.raises(ValueError, match="must be one of"):
        st.get_grid("table9")
    with pytest.raises(ValueError, match="not a ClassifierRunConfig option"):
        st.expand_grid(BASE, learning_rate=[0.1])


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


def test_items_from_npz(tmp_path):
    imgs = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    np.savez(tmp_path / "d.npz", train_images=imgs, train_labels=np.array([[0], [1], [1]], np.uint8))
    items = st.items_from_npz(tmp_path / "d.npz", "train")
    assert [it["label"] for it in items] == [0, 1, 1] and items[2]["image"].shape == (1, 4, 4)
    np.testing.assert_array_equal(items[1]["image"][0], imgs[1])
    with pytest.raises(ValueError, match="split"):
        st.items_from_npz(tmp_path / "d.npz", "val")


def test_items_from_npz_pneumoniamnist(shared_data):
    path = shared_data / "pneumoniamnist" / "pneumoniamnist_reconstructed.npz"
    train = st.items_from_npz(path, "train")
    labels = np.array([it["label"] for it in train])
    assert len(train) == 4708 and (labels == 0).sum() == 1214 and (labels == 1).sum() == 3494  # PROVENANCE.md
    assert train[0]["image"].shape == (1, 28, 28) and train[0]["image"].dtype == np.uint8
