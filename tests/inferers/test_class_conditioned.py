"""Tests for ClassConditionedDiffusionInferer and CFG label dropout."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_unet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from monai_synth.inferers import ClassConditionedDiffusionInferer, drop_class_labels, sample


class Spy(torch.nn.Module):
    """Records its inputs; returns the noisy input so the forward pass can be checked by hand."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.calls: list[dict] = []

    def forward(self, x, timesteps, class_labels=None, context=None):
        self.calls.append({"x": x, "timesteps": timesteps, "class_labels": class_labels, "context": context})
        return x + self.w


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_drop_class_labels_exact_draw(p):
    labels = torch.randint(0, 3, (1000,), generator=torch.Generator().manual_seed(0))
    got = drop_class_labels(labels, null_class=3, drop_prob=p, generator=torch.Generator().manual_seed(7))
    expected_mask = (
        torch.rand(1000, generator=torch.Generator().manual_seed(7)) < p if p > 0 else torch.zeros(1000, dtype=bool)
    )
    assert torch.equal(got == 3, expected_mask)
    assert torch.equal(got[~expected_mask], labels[~expected_mask])
    assert labels.max() < 3  # input untouched
    if 0 < p < 1:
        assert abs(expected_mask.float().mean().item() - p) < 0.05


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_drop_class_labels_invalid(p):
    with pytest.raises(ValueError, match="cond_drop_prob"):
        drop_class_labels(torch.tensor([0]), 1, p)


def test_forward_adds_noise_and_passes_labels():
    sched = DDPMScheduler(num_train_timesteps=20)
    inf = ClassConditionedDiffusionInferer(
        sched, num_classes=2, cond_drop_prob=0.5, generator=torch.Generator().manual_seed(3)
    )
    spy = Spy().train()
    x0, noise = torch.rand(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    t = torch.arange(8)
    labels = torch.tensor([0, 1] * 4)
    inf(x0, spy, noise, t, class_labels=labels)
    call = spy.calls[-1]
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(call["x"], a.sqrt() * x0 + (1 - a).sqrt() * noise)
    drop = torch.rand(8, generator=torch.Generator().manual_seed(3)) < 0.5
    assert torch.equal(call["class_labels"], torch.where(drop, torch.tensor(2), labels))
    # eval mode: no dropout
    spy.eval()
    inf(x0, spy, noise, t, class_labels=labels)
    assert torch.equal(spy.calls[-1]["class_labels"], labels)


def test_unconditional_forward():
    inf = ClassConditionedDiffusionInferer(DDPMScheduler(num_train_timesteps=10), num_classes=None)
    spy = Spy()
    inf(torch.zeros(2, 1, 4, 4), spy, torch.zeros(2, 1, 4, 4), torch.tensor([1, 2]))
    assert spy.calls[-1]["class_labels"] is None


@pytest.mark.parametrize(
    "name,num_classes,labels,match",
    [
        ("labels_without_classes", None, torch.tensor([0, 1]), "num_classes"),
        ("label_too_large", 2, torch.tensor([0, 3]), r"\[0, 2\]"),
        ("negative_label", 2, torch.tensor([-1, 0]), r"\[0, 2\]"),
    ],
)
def test_forward_errors(name, num_classes, labels, match):
    inf = ClassConditionedDiffusionInferer(DDPMScheduler(num_train_timesteps=10), num_classes=num_classes)
    with pytest.raises(ValueError, match=match):
        inf(torch.zeros(2, 1, 4, 4), Spy(), torch.zeros(2, 1, 4, 4), torch.tensor([1, 2]), class_labels=labels)


@pytest.mark.parametrize("kwargs,match", [({"num_classes": 0}, "num_classes"), ({"cond_drop_prob": 2.0}, "cond_drop")])
def test_init_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassConditionedDiffusionInferer(DDPMScheduler(num_train_timesteps=10), **kwargs)


def test_sample_delegates_to_shared_loop():
    net = tiny_unet(num_classes=2)
    sched = DDIMScheduler(num_train_timesteps=20)
    sched.set_timesteps(4)
    inf = ClassConditionedDiffusionInferer(sched, num_classes=2)
    noise = torch.randn(2, 1, 8, 8)
    labels = torch.tensor([0, 1])
    a = inf.sample(noise, net, class_labels=labels, guidance_scale=2.5)
    b = sample(net, sched, noise=noise, class_labels=labels, guidance_scale=2.5, null_class=2)
    torch.testing.assert_close(a, b)
