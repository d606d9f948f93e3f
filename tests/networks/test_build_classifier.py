"""build_classifier: MONAI ResNet / ConvNeXt by name, local pretrained weights, clear errors."""

from __future__ import annotations

import pytest
import torch

from monai_synth.networks import CLASSIFIER_NAMES, build_classifier, load_classifier_weights


@pytest.mark.parametrize(
    "name,size,in_ch,classes",
    [("resnet18", 28, 1, 2), ("resnet18", 64, 3, 4), ("resnet10", 16, 1, 2), ("convnext_micro", 28, 1, 2)],
    ids=["resnet18_28", "resnet18_64_rgb", "resnet10_16", "convnext_micro_28"],
)
def test_shapes(name, size, in_ch, classes):
    net = build_classifier(name, in_channels=in_ch, num_classes=classes).eval()
    assert net(torch.rand(2, in_ch, size, size)).shape == (2, classes)


def test_resnet18_is_monai_resnet_with_known_param_count():
    from monai.networks.nets import ResNet

    net = build_classifier("resnet18", in_channels=1, num_classes=2)
    assert isinstance(net, ResNet)
    # torchvision resnet18 has 11,689,512 params for 3ch/1000 classes; 1 input channel (-6272 = 2*64*49) and a
    # 2-class head (-(512*998 + 998) = -511,974) give 11,171,266; MONAI's 2D ResNet adds bias in the downsample
    # convs (bias_downsample=True: 128 + 256 + 512 = 896) -> 11,172,162.
    assert sum(p.numel() for p in net.parameters()) == 11_689_512 - 6272 - 511_974 + 896


def test_pretrained_roundtrip(tmp_path):
    torch.manual_seed(0)
    src = build_classifier("resnet10", num_classes=3)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": src.state_dict()}, path)
    torch.manual_seed(1)
    dst = build_classifier("resnet10", num_classes=3, pretrained_path=path).eval()
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(dst(x), src.eval()(x))


def test_pretrained_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_classifier("resnet10", pretrained_path=tmp_path / "nope.pt")


def test_pretrained_key_mismatch(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(build_classifier("convnext_micro").state_dict(), path)
    with pytest.raises(ValueError, match="do not match"):
        build_classifier("resnet10", pretrained_path=path)
    torch.save(build_classifier("resnet10", num_classes=5).state_dict(), path)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_classifier_weights(build_classifier("resnet10", num_classes=2), path, strict=False)


def test_unknown_name():
    with pytest.raises(ValueError, match="must be one of"):
        build_classifier("vgg16")
    assert "resnet18" in CLASSIFIER_NAMES and "convnext_tiny" in CLASSIFIER_NAMES
