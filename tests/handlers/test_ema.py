"""Tests for the EMA model/handler against hand-computed averages."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from monai_synth.handlers import EMAHandler, create_ema_model, ema_decay_at


@pytest.mark.parametrize(
    "n,decay,warmup,expected",
    [(0, 0.999, True, 0.1), (1, 0.999, True, 2 / 11), (90, 0.9, True, 0.9), (0, 0.999, False, 0.999)],
)
def test_ema_decay_at(n, decay, warmup, expected):
    assert ema_decay_at(n, decay, warmup) == pytest.approx(expected)


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_updates_match_hand_computation(warmup):
    net = torch.nn.Linear(2, 1, bias=False)
    ema = create_ema_model(net, decay=0.5, warmup=warmup)
    handler = EMAHandler(ema, update_every=1)
    engine = SimpleNamespace(state=SimpleNamespace(iteration=0), network=net)
    values = [1.0, 3.0, 7.0]
    expected = None
    for i, v in enumerate(values):
        with torch.no_grad():
            net.weight.fill_(v)
        engine.state.iteration = i + 1
        handler(engine)
        if expected is None:
            expected = v  # first update copies
        else:
            d = ema_decay_at(i - 1, 0.5, warmup)
            expected = d * expected + (1 - d) * v
        torch.testing.assert_close(ema.module.weight, torch.full((1, 2), expected))
    # warm-up: decays 0.1, 2/11 -> 1 -> 2.8 -> 6.236...; constant 0.5: 1 -> 2 -> 4.5
    assert expected == pytest.approx(6.236363636 if warmup else 4.5)


def test_ema_update_every_and_errors():
    net = torch.nn.Linear(1, 1)
    ema = create_ema_model(net, decay=0.9)
    handler = EMAHandler(ema, update_every=2)
    engine = SimpleNamespace(state=SimpleNamespace(iteration=1), network=net)
    handler(engine)
    assert int(ema.n_averaged) == 0
    engine.state.iteration = 2
    handler(engine)
    assert int(ema.n_averaged) == 1
    with pytest.raises(ValueError, match="update_every"):
        EMAHandler(ema, update_every=0)
    with pytest.raises(ValueError, match="ema_decay"):
        create_ema_model(net, decay=1.5)
