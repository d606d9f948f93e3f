"""Fault injection: processes killed with SIGKILL (no cleanup handlers run) during training, a study and generation.

Each test drives a small script from ``tests/reliability/scripts`` in a subprocess, kills it at seeded random moments
(after a seeded number of progress lines, plus a seeded delay) or deterministically *inside* an atomic write (the
script truncates the temporary file to half and hangs), and checks what a user would find afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_synth.handlers.checkpoint import checkpoint_path, latest_checkpoint
from monai_synth.utils.io import safe_torch_load

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).parent / "scripts"
TIMEOUT = 180.0  # per wait; generous for loaded CI machines (imports alone can take 10+ s there)


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"reliability_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Proc:
    """A script in a subprocess whose stdout lines can be awaited."""

    def __init__(self, script: str, *args) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        self.p = subprocess.Popen(
            [sys.executable, str(SCRIPTS / script), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
        )
        self.lines: queue.Queue = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, predicate, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError("timed out; output:\n" + "\n".join(self.log[-30:])) from None
            if line is None:
                raise AssertionError("process ended early; output:\n" + "\n".join(self.log[-30:]))
            self.log.append(line)
            if predicate(line):
                return line

    def kill(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=30)
        assert self.p.returncode in (-signal.SIGKILL, 0), self.p.returncode

    def finish(self, timeout: float = TIMEOUT) -> int:
        self.wait_for(lambda line: line == "DONE", timeout)
        return self.p.wait(timeout=30)


def _tensors(obj, prefix=""):
    """Flatten a (nested) state dict into ``{path: tensor or value}``."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): obj}


def _assert_same_state(a: dict, b: dict, what: str) -> None:
    fa, fb = _tensors(a), _tensors(b)
    assert fa.keys() == fb.keys(), what
    for k in fa:
        if torch.is_tensor(fa[k]):
            assert torch.equal(fa[k], fb[k]), f"{what}: {k} differs"
        else:
            assert fa[k] == fb[k], f"{what}: {k} differs ({fa[k]!r} vs {fb[k]!r})"


# ------------------------------------------------------------------------------------------------ training
def test_training_killed_at_random_moments_resumes_to_the_same_state(tmp_path):
    max_epochs = 10
    rng = np.random.default_rng(20261123)
    ck = tmp_path / "ck"

    # 1) SIGKILL at a random moment: after a random epoch's checkpoint, plus a random delay (mid next epoch / save)
    k1 = int(rng.integers(2, 4))
    p = Proc("tiny_train.py", ck, max_epochs)
    p.wait_for(lambda line: line == f"EPOCH {k1}")
    time.sleep(float(rng.uniform(0.0, 0.05)))
    p.kill()
    latest = latest_checkpoint(ck)
    e1 = int(safe_torch_load(latest)["trainer"]["epoch"])  # loadable, complete
    assert e1 >= k1 and latest == checkpoint_path(ck, e1)

    # 2) SIGKILL inside the atomic write of epoch k2: the half-written temporary file must be ignored
    k2 = e1 + int(rng.integers(2, 4))
    p = Proc("tiny_train.py", ck, max_epochs, "--pause-in-save", k2)
    assert p.wait_for(lambda line: line.startswith("START")) == f"START {e1}"  # resumed from the latest checkpoint
    p.wait_for(lambda line: line == "IN_SAVE")
    p.kill()
    partial = list(ck.glob(f".checkpoint_epoch{k2:05d}.pt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the interrupted write
    assert latest_checkpoint(ck) == checkpoint_path(ck, k2 - 1)
    assert int(safe_torch_load(checkpoint_path(ck, k2 - 1))["trainer"]["epoch"]) == k2 - 1
    with pytest.raises(ValueError, match="weights_only"):
        safe_torch_load(partial[0])  # what a non-atomic save would have left as the "latest" checkpoint

    # 3) resume to the end
    p = Proc("tiny_train.py", ck, max_epochs)
    assert p.wait_for(lambda line: line.startswith("START")) == f"START {k2 - 1}"
    assert p.finish() == 0
    final = safe_torch_load(checkpoint_path(ck, max_epochs))

    # reference: the same run without interruption, in this process
    script = _module("tiny_train")
    script.make_trainer(tmp_path / "ref", max_epochs).run()  # one thread, as the script (tests/conftest.py)
    ref = safe_torch_load(checkpoint_path(tmp_path / "ref", max_epochs))
    assert final["trainer"] == ref["trainer"] and final["trainer"]["epoch"] == max_epochs
    for key in ("network", "optimizer", "ema"):
        _assert_same_state(final[key], ref[key], key)


# ------------------------------------------------------------------------------------------------ study
def test_study_killed_mid_run_redoes_only_the_killed_run(tmp_path):
    from monai_synth.apps.augmentation.study import RUN_KEY_TAG, run_study
    from monai_synth.handlers.mlflow_extras import make_client

    rng = np.random.default_rng(7)
    p = Proc("tiny_study.py", tmp_path)
    p.wait_for(lambda line: line == "CREATED run1")  # run0 finished, run1 just started
    time.sleep(float(rng.uniform(0.0, 0.3)))
    p.kill()

    script = _module("tiny_study")
    kw = script.study_kwargs(str(tmp_path))
    client = make_client(kw["tracking_uri"])
    exp = client.get_experiment_by_name(kw["experiment"]).experiment_id
    before = {r.info.run_name: r for r in client.search_runs([exp])}
    assert before["run0"].info.status == "FINISHED"
    assert before["run1"].info.status == "RUNNING"  # SIGKILL: nothing could mark it FAILED/KILLED
    assert "run2" not in before

    results = run_study(script.grid(), script.data(), **kw)
    assert [r.skipped for r in results] == [True, False, False]
    after = client.search_runs([exp])
    by_name: dict[str, list] = {}
    for r in after:
        by_name.setdefault(r.info.run_name, []).append(r)
    assert [r.info.run_id for r in by_name["run0"]] == [before["run0"].info.run_id]  # skipped, not redone
    statuses = {r.info.run_id: r.info.status for r in by_name["run1"]}
    assert statuses.pop(before["run1"].info.run_id) == "KILLED"  # the stale RUNNING run is marked KILLED
    assert list(statuses.values()) == ["FINISHED"]  # and redone once
    finished_keys = [
        r.data.tags[RUN_KEY_TAG] for r in after if r.info.status == "FINISHED" and RUN_KEY_TAG in r.data.tags
    ]
    assert len(finished_keys) == 3 == len(set(finished_keys))


# ------------------------------------------------------------------------------------------------ generation
def _decode_all(out: Path) -> dict[str, np.ndarray]:
    from monai_synth.data import load_image_2d

    images = {}
    for f in sorted(out.rglob("synth_*")):
        assert not f.name.startswith("."), f
        images[str(f.relative_to(out))] = load_image_2d(f, rescale="dtype").numpy()  # raises if half-written
    return images


def test_generation_killed_leaves_no_half_written_images_and_rerun_completes(tmp_path):
    rng = np.random.default_rng(11)
    out = tmp_path / "gen"
    script = _module("tiny_generate")
    n_files = sum([script.KWARGS["num_per_class"]] * script.KWARGS["num_classes"]) * len(script.KWARGS["formats"])

    # 1) SIGKILL after a random number of written files (+ random delay)
    k = int(rng.integers(3, 10))
    p = Proc("tiny_generate.py", out)
    for _ in range(k):
        p.wait_for(lambda line: line.startswith("WROTE"))
    time.sleep(float(rng.uniform(0.0, 0.05)))
    p.kill()
    first = _decode_all(out)
    assert 0 < len(first) < n_files and not (out / "datalist.json").exists()

    # 2) SIGKILL inside an atomic write (temporary file half-written)
    p = Proc("tiny_generate.py", out, "--pause-at-replace", 2)
    target = Path(p.wait_for(lambda line: line.startswith("IN_WRITE")).split(" ", 1)[1])
    p.kill()
    assert not target.exists()  # the final name never held a partial file
    assert list(target.parent.glob(f".{target.name}.*.tmp"))  # the interrupted temporary file (hidden, ignored)
    second = _decode_all(out)
    assert second.keys() >= first.keys()

    # 3) re-run completes the set; every file decodes and equals an uninterrupted run
    p = Proc("tiny_generate.py", out)
    assert p.finish() == 0
    final = _decode_all(out)
    assert len(final) == n_files
    items = json.loads((out / "datalist.json").read_text())["training"]
    assert len(items) == n_files // len(script.KWARGS["formats"])

    from monai_synth.engines.generate import generate_dataset

    model, sched = script.make_model_and_scheduler()  # one thread, as the script (tests/conftest.py)
    generate_dataset(model, sched, tmp_path / "ref", **script.KWARGS)
    ref = _decode_all(tmp_path / "ref")
    assert ref.keys() == final.keys()
    for name in ref:
        np.testing.assert_array_equal(final[name], ref[name], err_msg=name)


# ------------------------------------------------------------------------------------------------ 20 random kills
# Issue 13: SIGKILL at 20 random points spread over training (8), generation with near-copy filtering (6), the study
# (4) and its comparison (2); after each phase is resumed to the end, the result equals an uninterrupted run's.
KILL_SEED = 20261202


def _kill_after(p: Proc, marker, n: int, delay: float) -> None:
    """SIGKILL ``p`` after ``n`` lines starting with ``marker`` and ``delay`` seconds."""
    for _ in range(n):
        p.wait_for(lambda line: line.startswith(marker))
    time.sleep(delay)
    p.kill()


def test_training_killed_at_eight_random_points_resumes_to_the_same_state(tmp_path):
    rng = np.random.default_rng(KILL_SEED)
    max_epochs, ck = 24, tmp_path / "ck"
    for _ in range(8):
        p = Proc("tiny_train.py", ck, max_epochs)
        _kill_after(p, "EPOCH", int(rng.integers(1, 3)), float(rng.uniform(0.0, 0.03)))
        latest = latest_checkpoint(ck)
        assert latest is not None and int(safe_torch_load(latest)["trainer"]["epoch"]) < max_epochs
    assert Proc("tiny_train.py", ck, max_epochs).finish() == 0
    final = safe_torch_load(checkpoint_path(ck, max_epochs))
    _module("tiny_train").make_trainer(tmp_path / "ref", max_epochs).run()
    ref = safe_torch_load(checkpoint_path(tmp_path / "ref", max_epochs))
    assert final["trainer"] == ref["trainer"]
    for key in ("network", "optimizer", "ema"):
        _assert_same_state(final[key], ref[key], key)


def test_filtered_generation_killed_at_six_random_points_equals_an_uninterrupted_run(tmp_path):
    from monai_synth.engines.generate import generate_dataset

    rng = np.random.default_rng(KILL_SEED + 1)
    script = _module("tiny_generate")
    model, sched = script.make_model_and_scheduler()
    plain = generate_dataset(model, sched, tmp_path / "plain", **{**script.KWARGS, "formats": ("png",)})
    from monai_synth.data import load_image_2d

    memorised = np.stack([load_image_2d(plain.items[i]["image"], rescale="dtype").numpy() for i in (1, 6, 11)])
    refs = np.concatenate([memorised, rng.random((5, 1, 16, 16)).astype(np.float32)])
    np.save(tmp_path / "refs.npy", refs)
    model, sched = script.make_model_and_scheduler()
    reference = generate_dataset(model, sched, tmp_path / "ref", **script.KWARGS,
                                 near_copy_filter=script.make_filter(tmp_path / "refs.npy"))  # fmt: skip
    assert sorted(reference.dropped) == [1, 6, 11]

    out = tmp_path / "gen"
    for _ in range(6):
        p = Proc("tiny_generate.py", out, "--refs", tmp_path / "refs.npy", "--write-delay", 0.1)
        _kill_after(p, "WROTE", int(rng.integers(1, 4)), float(rng.uniform(0.0, 0.08)))
        present = _decode_all(out)  # every file present decodes (no half-written image)
        if (out / "datalist.json").exists():  # only a run that wrote its last file may have finished
            assert present.keys() == _decode_all(tmp_path / "ref").keys()
    assert Proc("tiny_generate.py", out, "--refs", tmp_path / "refs.npy").finish() == 0
    final, ref = _decode_all(out), _decode_all(tmp_path / "ref")
    assert final.keys() == ref.keys()  # the dropped candidates were never written, as in the uninterrupted run
    assert not [k for k in final if any(f"synth_{i:06d}" in k for i in (1, 6, 11))]
    for name in ref:
        np.testing.assert_array_equal(final[name], ref[name], err_msg=name)
    assert (
        json.loads((out / "generation.json").read_text())["dropped"]
        == json.loads((tmp_path / "ref" / "generation.json").read_text())["dropped"]
    )
    flagged = [r["synthetic"] for r in json.loads((out / "privacy_report.json").read_text())["flagged"]]
    assert sorted(flagged) == sorted(r["synthetic"] for r in reference.dropped.values())


def _finished_metrics(out_dir: Path) -> dict[str, dict]:
    from monai_synth.handlers.mlflow_extras import make_client

    script = _module("tiny_study")
    kw = script.study_kwargs(str(out_dir))
    client = make_client(kw["tracking_uri"])
    exp = client.get_experiment_by_name(kw["experiment"]).experiment_id
    runs = [r for r in client.search_runs([exp]) if r.info.status == "FINISHED" and r.info.run_name != "s"]
    names = [r.info.run_name for r in runs]
    assert sorted(names) == ["run0", "run1", "run2"], names  # each config finished exactly once
    return {r.info.run_name: {k: v for k, v in r.data.metrics.items() if k.startswith("test_")} for r in runs}


def test_study_and_comparison_killed_at_six_random_points_equal_an_uninterrupted_study(tmp_path):
    from monai_synth.apps.augmentation.study import run_study

    rng = np.random.default_rng(KILL_SEED + 2)
    out = tmp_path / "study"
    for _ in range(4):  # during the classifier runs
        p = Proc("tiny_study.py", out, "--compare")
        _kill_after(p, "CREATED", int(rng.integers(1, 3)), float(rng.uniform(0.0, 1.0)))
    compare_kills = 0
    while compare_kills < 2:  # during the comparison (the runs finish first)
        p = Proc("tiny_study.py", out, "--compare")
        line = p.wait_for(lambda line: line in ("COMPARE", "DONE"))
        assert line == "COMPARE"
        time.sleep(float(rng.uniform(0.0, 0.3)))
        p.kill()
        compare_kills += 1
    assert Proc("tiny_study.py", out, "--compare").finish() == 0

    script = _module("tiny_study")
    run_study(script.grid(), script.data(), **script.study_kwargs(str(tmp_path / "ref"), compare=True))
    got, want = _finished_metrics(out), _finished_metrics(tmp_path / "ref")
    for name in want:
        assert got[name].keys() == want[name].keys()
        for k in want[name]:
            assert got[name][k] == pytest.approx(want[name][k], abs=1e-6), (name, k)
    import csv

    def table(folder: Path) -> list[dict]:  # the comparison without the MLflow run ids (new ids per run)
        rows = list(csv.DictReader((folder / "comparison" / "comparison.csv").read_text().splitlines()))
        return [{k: v for k, v in r.items() if "run" not in k.lower()} for r in rows]

    assert table(out) == table(tmp_path / "ref") and len(table(out)) == 3
