"""The public training handlers on tiny Ignite engines: lr warm-up (with resume), time budget, loss history, progress
bar adapter, classifier epoch statistics, best-weights keeping and metric history."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

import monai_synth.handlers.training as training
from monai_synth.handlers import (
    EpochStatsHandler,
    HistoryRecorderHandler,
    KeepBestHandler,
    LossHistoryHandler,
    ProgressBarHandler,
    TimeBudgetHandler,
    WarmupLrHandler,
)


def _lr_engine(iters: int, lr: float = 0.1):
    """An engine whose step records the optimizer's lr; warm-up over ``iters`` iterations."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)  # overwritten by the handler
    seen: list[tuple[int, float]] = []
    engine = Engine(lambda e, b: seen.append((e.state.iteration, opt.param_groups[0]["lr"])))
    WarmupLrHandler(opt, lr, iters).attach(engine)
    return engine, seen


@pytest.mark.parametrize("iters", [0, 1, 7, 30])
def test_warmup_lr_is_linear_then_constant(iters):
    engine, seen = _lr_engine(iters)
    engine.run(range(5), max_epochs=4)
    assert [i for i, _ in seen] == list(range(1, 21))
    for i, lr in seen:
        assert lr == pytest.approx(0.1 * (1.0 if iters == 0 else min(1.0, i / iters))), i


def test_warmup_lr_continues_after_resume():
    """A run resumed at iteration 5 continues the warm-up at 6/10, as an uninterrupted run would."""
    full, full_seen = _lr_engine(10)
    full.run(range(5), max_epochs=4)
    resumed, seen = _lr_engine(10)
    resumed.load_state_dict({"iteration": 5, "epoch_length": 5, "max_epochs": 4})  # what a checkpoint restores
    resumed.run(range(5))
    assert [i for i, _ in seen] == list(range(6, 21))
    assert seen == full_seen[5:]
    for i, lr in seen:
        assert lr == pytest.approx(0.1 * min(1.0, i / 10))


def _cooldown_reference(i: int, total: int, lr: float, warm: int, f: float, r: float = 0.0) -> float:
    """The warm-up / stable / cosine-decay rate of iteration ``i`` (1-based) of ``total``, written out directly."""
    rate = lr * (min(1.0, i / warm) if warm else 1.0)
    start = (1.0 - f) * total  # iterations done when the cool-down starts
    if (i - 1) > start:  # i - 1 iterations are done before iteration i
        rate *= r + (1.0 - r) * (1.0 + math.cos(math.pi * ((i - 1) - start) / (f * total))) / 2.0
    return rate


@pytest.mark.parametrize("f,r", [(0.5, 0.0), (1.0, 0.0), (0.25, 0.1)])
def test_lr_cooldown_follows_the_cosine_over_the_last_share_of_the_epochs(f, r):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    seen: list[tuple[int, float]] = []
    engine = Engine(lambda e, b: seen.append((e.state.iteration, opt.param_groups[0]["lr"])))
    WarmupLrHandler(opt, 0.1, 3, anneal_fraction=f, final_ratio=r).attach(engine)
    engine.run(range(5), max_epochs=8)  # 40 iterations
    assert len(seen) == 40
    for i, rate in seen:
        assert rate == pytest.approx(_cooldown_reference(i, 40, 0.1, 3, f, r), abs=1e-12), i
    # constant until the cool-down starts, then strictly falling towards r * lr
    start = int((1 - f) * 40)
    assert all(rate == pytest.approx(0.1) for i, rate in seen if 3 <= i <= start + 1)
    tail = [rate for i, rate in seen if i > max(start + 1, 3)]  # after the warm-up
    assert all(a > b for a, b in zip(tail, tail[1:]))
    assert 0.1 * r <= tail[-1] < 0.1 * (r + (1 - r) * 0.05)  # nearly cooled down at the last iteration


def test_lr_cooldown_continues_after_resume():
    """A run resumed after iteration 15 of 40 sets the same rates as the uninterrupted run from there on."""

    def run(state=None):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        seen: list[tuple[int, float]] = []
        engine = Engine(lambda e, b: seen.append((e.state.iteration, opt.param_groups[0]["lr"])))
        WarmupLrHandler(opt, 0.1, 5, anneal_fraction=0.6).attach(engine)
        if state:
            engine.load_state_dict(state)
            engine.run(range(5))
        else:
            engine.run(range(5), max_epochs=8)
        return seen

    full = run()
    resumed = run({"iteration": 15, "epoch_length": 5, "max_epochs": 8})
    assert resumed == full[15:]


def test_lr_cooldown_follows_the_time_budget(monkeypatch):
    """With a wall-clock budget the cool-down runs over the last share of the budget, not of the epoch cap."""
    clock = [0.0]
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    seen: list[float] = []

    def step(engine, batch):
        seen.append(opt.param_groups[0]["lr"])
        clock[0] += 1.0  # one "second" per iteration

    engine = Engine(step)
    budget = TimeBudgetHandler(10.0)
    budget.attach(engine)
    WarmupLrHandler(opt, 0.2, 0, anneal_fraction=0.5, budget=budget).attach(engine)
    engine.run(range(100), max_epochs=100)  # the epoch cap (10,000 iterations) is far away: time decides
    assert len(seen) == 10
    expected = [0.2 if t <= 5 else 0.1 * (1 + math.cos(math.pi * (t - 5) / 5)) for t in range(10)]
    assert seen == pytest.approx(expected, abs=1e-12)
    assert budget.fraction_used() == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{"anneal_fraction": -0.1}, {"anneal_fraction": 1.5}, {"final_ratio": 2.0}])
def test_lr_cooldown_refuses_bad_settings(kwargs):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        WarmupLrHandler(opt, 0.1, 0, **kwargs)


def test_time_budget_terminates_at_the_first_iteration_past_it(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def step(engine, batch):
        clock[0] += 1.0  # every iteration takes one "second"

    engine = Engine(step)
    TimeBudgetHandler(3.5).attach(engine)
    engine.run(range(10), max_epochs=5)
    assert engine.state.iteration == 4  # elapsed 4 s >= 3.5 s after the 4th iteration
    assert engine.should_terminate


def test_time_budget_zero_stops_after_one_iteration_and_large_budget_never():
    engine = Engine(lambda e, b: None)
    TimeBudgetHandler(0.0).attach(engine)
    engine.run(range(10), max_epochs=5)
    assert engine.state.iteration == 1
    engine = Engine(lambda e, b: None)
    TimeBudgetHandler(3600.0).attach(engine)
    engine.run(range(10), max_epochs=2)
    assert engine.state.iteration == 20


@pytest.mark.parametrize("decollated", [False, True])
def test_loss_history_means_per_epoch(decollated):
    losses = iter([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])

    def step(engine, batch):
        out = {"loss": torch.tensor(next(losses))}
        return [out, out] if decollated else out  # decollated: the loss is on every item

    engine = Engine(step)
    history = LossHistoryHandler()
    history.attach(engine)
    engine.run(range(3), max_epochs=2)
    assert history.history["epoch"] == [1, 2]
    assert history.history["loss"] == pytest.approx([2.0, 20.0])
    elapsed = history.history["elapsed_s"]
    assert len(elapsed) == 2 and 0 <= elapsed[0] <= elapsed[1]
    assert history.start_iteration == 0


def test_loss_history_records_the_resumed_iteration():
    engine = Engine(lambda e, b: {"loss": 4.0})
    history = LossHistoryHandler()
    history.attach(engine)
    engine.load_state_dict({"iteration": 6, "epoch_length": 3, "max_epochs": 3})
    engine.run(range(3))
    assert history.start_iteration == 6 and history.history["epoch"] == [3] and history.history["loss"] == [4.0]


def test_progress_bar_adapter_attaches_with_the_loss():
    class FakeBar:
        def attach(self, engine, output_transform):
            self.engine, self.transform = engine, output_transform

    bar = FakeBar()
    engine = Engine(lambda e, b: None)
    ProgressBarHandler(bar).attach(engine)
    assert bar.engine is engine
    assert bar.transform({"loss": torch.tensor(2.5), "image": torch.zeros(1)}) == {"loss": 2.5}
    assert bar.transform([{"loss": 1.5}, {"loss": 1.5}]) == {"loss": 1.5}  # decollated output


def test_progress_bar_adapter_with_a_real_ignite_bar():
    engine = Engine(lambda e, b: {"loss": torch.tensor(float(b))})
    ProgressBarHandler(ProgressBar(persist=False, disable=True)).attach(engine)
    engine.run(range(3), max_epochs=2)
    assert engine.state.iteration == 6


def test_epoch_stats_are_sample_weighted_means_with_current_lr():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    batches = [(1.0, 2), (4.0, 1), (0.5, 4)]  # (mean batch loss, batch size)

    def step(engine, batch):
        loss, n = batch
        return {"loss": torch.tensor(loss), "label": torch.zeros(n)}

    engine = Engine(step)
    EpochStatsHandler(opt).attach(engine)
    seen = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: opt.param_groups[0].update(lr=0.25))
    engine.run(batches, max_epochs=2)
    mean = (1.0 * 2 + 4.0 * 1 + 0.5 * 4) / 7
    assert seen[0]["train_loss"] == pytest.approx(mean) and seen[0]["lr"] == 0.5
    assert seen[1]["train_loss"] == pytest.approx(mean) and seen[1]["lr"] == 0.25  # reset every epoch


def test_keep_best_keeps_the_best_epochs_weights():
    net = torch.nn.Linear(1, 1, bias=False)
    scores = [0.2, 0.9, 0.5, 0.7]

    def step(engine, batch):
        with torch.no_grad():
            net.weight.fill_(float(engine.state.epoch))  # the weights of epoch e are e

    engine = Engine(step)

    @engine.on(Events.EPOCH_COMPLETED)
    def _track_best(e):  # what MONAI's evaluator does with its key metric
        score = scores[e.state.epoch - 1]
        if score > getattr(e.state, "best_metric", -1.0):
            e.state.best_metric, e.state.best_metric_epoch = score, e.state.epoch

    keep = KeepBestHandler(net)
    keep.attach(engine)
    engine.run([0], max_epochs=4)
    assert engine.state.best_metric_epoch == 2
    assert keep.state["weight"].item() == 2.0  # epoch 2's weights, not the last epoch's
    assert net.weight.item() == 4.0
    with torch.no_grad():
        net.weight.fill_(-1.0)
    assert keep.state["weight"].item() == 2.0  # a copy, not a view of the live weights


def test_keep_best_copies_the_first_epoch_before_any_best():
    net = torch.nn.Linear(1, 1, bias=False)
    engine = Engine(lambda e, b: None)
    engine.state.best_metric_epoch = -1  # no improvement recorded yet
    keep = KeepBestHandler(net)
    keep.attach(engine)
    engine.run([0], max_epochs=1)
    torch.testing.assert_close(keep.state["weight"], net.weight.detach())


def test_history_recorder_appends_metrics_with_prefix_and_stage():
    history: dict[str, list] = {"val_accuracy": [0.1]}  # existing lists are extended
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        e.state.metrics.update(accuracy=e.state.epoch / 10, auc=torch.tensor(0.5))

    HistoryRecorderHandler(history, prefix="val_", stage="finetune").attach(engine)
    engine.run([0], max_epochs=2)
    assert history["val_accuracy"] == pytest.approx([0.1, 0.1, 0.2])
    assert history["val_auc"] == [0.5, 0.5] and all(type(v) is float for v in history["val_auc"])
    assert history["stage"] == ["finetune", "finetune"]
    plain: dict[str, list] = {}
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(loss=1.0))
    HistoryRecorderHandler(plain).attach(engine)
    engine.run([0], max_epochs=1)
    assert plain == {"loss": [1.0]}
