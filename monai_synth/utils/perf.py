"""Small helpers for the fast CPU/GPU path: threads, inference set-up, SDPA attention, FLOPs and timing.

These helpers never change what a model computes (up to float rounding): they change memory layout
(``channels_last``), the attention kernel (PyTorch's fused ``scaled_dot_product_attention`` instead of an
explicit ``softmax(q k^T) v``), autograd bookkeeping (``torch.inference_mode``) and, on request, compile the
model with ``torch.compile``. ``benchmarks/run.py`` uses them to measure each lever; ``docs/performance.md``
reports the figures.

Example::

    from monai_synth.utils.perf import optimize_for_inference, set_num_threads

    set_num_threads(8)
    fast = optimize_for_inference(model, channels_last=True, sdpa=True)
    with torch.inference_mode():
        eps = fast(x, timesteps, class_labels=y)
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = [
    "TimingStats",
    "channels_last_format",
    "count_flops",
    "enable_compile_cache",
    "enable_sdpa_attention",
    "machine_info",
    "matmul_peak_gflops",
    "optimize_for_inference",
    "set_num_threads",
    "time_call",
    "warm_up",
]

logger = logging.getLogger(__name__)

_COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class TimingStats(NamedTuple):
    """Wall-clock timings of repeated calls, in seconds.

    Attributes:
        median: median of ``times`` (the figure to report; robust to a noisy neighbour).
        minimum: fastest repeat.
        times: every timed repeat, in call order (warm-up calls excluded).
    """

    median: float
    minimum: float
    times: tuple[float, ...]


def set_num_threads(num_threads: int | None = None, num_interop_threads: int | None = None) -> dict[str, int]:
    """Set PyTorch's intra-op (and optionally inter-op) CPU thread counts.

    ``torch.set_num_threads`` decides how many cores one convolution or matmul uses. On a shared machine,
    fewer threads than cores avoids oversubscription; on a quiet machine, one thread per physical core is
    usually fastest. ``num_interop_threads`` can only be set once per process, before any parallel work.

    Args:
        num_threads: intra-op threads (positive); ``None`` keeps the current setting.
        num_interop_threads: inter-op threads (positive); ``None`` keeps the current setting.

    Returns:
        The settings in effect afterwards: ``{"num_threads": ..., "num_interop_threads": ...}``.

    Raises:
        ValueError: when a count is not a positive integer.
    """
    for name, value in (("num_threads", num_threads), ("num_interop_threads", num_interop_threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if num_interop_threads is not None and torch.get_num_interop_threads() != num_interop_threads:
        try:
            torch.set_num_interop_threads(num_interop_threads)
        except RuntimeError as err:  # already started: keep going with the current value
            logger.warning("could not set num_interop_threads=%d: %s", num_interop_threads, err)
    return {"num_threads": torch.get_num_threads(), "num_interop_threads": torch.get_num_interop_threads()}


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format for a tensor with ``spatial_dims`` spatial axes.

    Args:
        spatial_dims: 2 (``NCHW`` -> ``torch.channels_last``) or 3 (``NCDHW`` -> ``torch.channels_last_3d``).

    Raises:
        ValueError: for any other number of spatial dims (PyTorch has no channels-last format for them).
    """
    if spatial_dims == 2:
        return torch.channels_last
    if spatial_dims == 3:
        return torch.channels_last_3d
    raise ValueError(f"`spatial_dims` must be 2 or 3 for a channels-last memory format, got {spatial_dims!r}.")


def enable_sdpa_attention(model: nn.Module) -> int:
    """Route MONAI attention blocks of an existing model to ``torch.nn.functional.scaled_dot_product_attention``.

    Equivalent to building ``DiffusionModelUNet(..., use_flash_attention=True)``: MONAI's ``SABlock`` and
    ``CrossAttentionBlock`` read the ``use_flash_attention`` flag at every forward, so flipping it on a built
    (or checkpoint-loaded) model selects PyTorch's fused kernel (flash / memory-efficient on CUDA, a fused
    C++ kernel on CPU) without changing the weights. Blocks with attention dropout are left alone because
    MONAI passes ``dropout_p`` to SDPA even in eval mode, and blocks that save attention maps or use a
    relative positional embedding cannot use SDPA.

    Args:
        model: any module; only submodules with a ``use_flash_attention`` attribute are touched.

    Returns:
        The number of attention blocks now using SDPA.
    """
    enabled = 0
    for name, module in model.named_modules():
        if not hasattr(module, "use_flash_attention"):
            continue
        if getattr(module, "save_attn", False) or getattr(module, "rel_positional_embedding", None) is not None:
            logger.info("attention block %r keeps explicit attention (save_attn or relative positions).", name)
            continue
        if float(getattr(module, "dropout_rate", 0.0)) > 0.0:
            logger.info("attention block %r keeps explicit attention (attention dropout > 0).", name)
            continue
        module.use_flash_attention = True
        enabled += 1
    return enabled


def enable_compile_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """Persist ``torch.compile`` (Inductor) artefacts on disk so a second process skips most of the compile.

    Compiling the default UNet takes 1-2 minutes on a small CPU; with the FX-graph and autotune caches in a
    fixed directory, later runs with the same model, shapes and torch version load the compiled kernels in
    seconds. Must be called before the first compiled forward.

    Args:
        cache_dir: where to keep the cache; defaults to ``$TORCHINDUCTOR_CACHE_DIR`` or
            ``~/.cache/monai_synth/inductor``.

    Returns:
        The cache directory in use.
    """
    default = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or Path.home() / ".cache" / "monai_synth" / "inductor"
    path = Path(cache_dir if cache_dir is not None else default).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        if hasattr(inductor_config, "autotune_local_cache"):
            inductor_config.autotune_local_cache = True
    except ImportError:  # pragma: no cover - inductor missing from an unusual build
        logger.warning("torch._inductor is unavailable; the compile cache directory is set but unused.")
    return path


def optimize_for_inference(
    model: nn.Module,
    channels_last: bool = False,
    sdpa: bool = True,
    compile: bool = False,
    compile_mode: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    spatial_dims: int = 2,
) -> nn.Module:
    """Prepare a denoiser for fast sampling: eval mode, no grads, and the chosen speed levers.

    The model is modified in place (``eval()``, ``requires_grad_(False)``, memory format, attention flag);
    with ``compile=True`` the returned module is the ``torch.compile`` wrapper around it. Call the result under
    ``torch.inference_mode()``. Outputs equal the original model's up to float rounding.

    Args:
        model: the network (e.g. MONAI ``DiffusionModelUNet``).
        channels_last: store conv weights channels-last (NHWC); often faster for convolutions on recent
            CPUs (oneDNN) and on GPUs with tensor cores. Measure: not always a gain on small images.
        sdpa: switch MONAI attention blocks to PyTorch's fused attention (see :func:`enable_sdpa_attention`).
        compile: wrap the model with ``torch.compile``. The first forward per input shape compiles (slow);
            see :func:`warm_up` and :func:`enable_compile_cache`.
        compile_mode: ``torch.compile`` mode, one of ``None``, ``"default"``, ``"reduce-overhead"``,
            ``"max-autotune"``, ``"max-autotune-no-cudagraphs"``.
        cache_dir: with ``compile=True``, directory for the persistent Inductor cache (see
            :func:`enable_compile_cache`); ``None`` keeps PyTorch's default location.
        spatial_dims: number of spatial axes of the inputs (2 or 3), used to pick the channels-last format.

    Returns:
        The prepared module (the same object, or its compiled wrapper when ``compile=True``).

    Raises:
        ValueError: for an unknown ``compile_mode`` or, with ``channels_last=True``, unsupported ``spatial_dims``.
    """
    if compile_mode not in _COMPILE_MODES:
        raise ValueError(f"`compile_mode` must be one of {list(_COMPILE_MODES)}, got {compile_mode!r}.")
    model.eval()
    model.requires_grad_(False)
    if channels_last:
        model.to(memory_format=channels_last_format(spatial_dims))
    if sdpa:
        count = enable_sdpa_attention(model)
        logger.debug("SDPA enabled on %d attention blocks.", count)
    if not compile:
        return model
    if cache_dir is not None:
        enable_compile_cache(cache_dir)
    return torch.compile(model, mode=compile_mode)


def _synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(
    fn: Callable[..., Any],
    *args: Any,
    iterations: int = 1,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> float:
    """Call ``fn(*args, **kwargs)`` ``iterations`` times under ``torch.inference_mode`` and return the seconds spent.

    Use it to trigger ``torch.compile`` (and cuDNN/oneDNN algorithm selection) before timing or serving, with
    the same input shapes as the real calls.

    Args:
        fn: the callable (model or sampling function).
        args: positional inputs.
        iterations: number of calls (positive).
        device: synchronized after the calls when it is a CUDA device.
        kwargs: keyword inputs.

    Raises:
        ValueError: when ``iterations`` is not positive.
    """
    if iterations < 1:
        raise ValueError(f"`iterations` must be >= 1, got {iterations!r}.")
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(iterations):
            fn(*args, **kwargs)
    _synchronize(device)
    return time.perf_counter() - start


def time_call(
    fn: Callable[[], Any],
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> TimingStats:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed calls; report the median.

    Args:
        fn: zero-argument callable (wrap arguments with ``functools.partial`` or a lambda).
        repeats: timed calls (positive).
        warmup: untimed calls first (>= 0).
        device: CUDA device to synchronize around every call (GPU work is asynchronous); ``None``/CPU skips it.

    Returns:
        :class:`TimingStats` with the median, minimum and all timed durations in seconds.

    Raises:
        ValueError: when ``repeats < 1`` or ``warmup < 0``.
    """
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1, got {repeats!r}.")
    if warmup < 0:
        raise ValueError(f"`warmup` must be >= 0, got {warmup!r}.")
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return TimingStats(median=statistics.median(times), minimum=min(times), times=tuple(times))


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Floating-point operations of one call ``fn(*args, **kwargs)``, counted by ``torch.utils.flop_counter``.

    ``FlopCounterMode`` counts matmul-like operators (linear, matmul, convolution, attention), with a
    multiply-add as 2 FLOPs: a ``Linear(in, out)`` on ``B`` rows is ``2 * B * in * out``, a ``Conv2d`` is
    ``2 * B * C_out * H_out * W_out * C_in / groups * k_h * k_w``. Bias adds, normalisation and activations
    are not counted, which is the usual convention for "fraction of matmul peak".

    Args:
        fn: the callable (e.g. a model).
        args: positional inputs.
        kwargs: keyword inputs.

    Returns:
        Total FLOPs of the call (an integer).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def matmul_peak_gflops(
    size: int = 2048,
    repeats: int = 5,
    warmup: int = 2,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> float:
    """Measured dense matmul throughput (GFLOP/s): median over ``repeats`` of a ``size x size`` product.

    A square ``n x n`` product costs ``2 n^3`` FLOPs. The figure is the practical peak of this machine with
    the current thread setting, used as the denominator of "fraction of peak" for model throughput.

    Args:
        size: matrix side (positive); 2048 or more to saturate a multi-core CPU.
        repeats: timed products (positive).
        warmup: untimed products first.
        device: where to run.
        dtype: element type (float32 by default).

    Returns:
        GFLOP/s of the median repeat.

    Raises:
        ValueError: when ``size`` is not a positive integer.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"`size` must be a positive integer, got {size!r}.")
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen, dtype=dtype).to(device)
    b = torch.randn(size, size, generator=gen, dtype=dtype).to(device)
    out = torch.empty(size, size, dtype=dtype, device=device)
    stats = time_call(lambda: torch.mm(a, b, out=out), repeats=repeats, warmup=warmup, device=device)
    return 2.0 * size**3 / stats.median / 1e9


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu", extra_packages: Sequence[str] = ()) -> dict[str, Any]:
    """Describe the machine and software a benchmark ran on (for the JSON record).

    Args:
        device: the benchmark device; for CUDA the GPU name is recorded.
        extra_packages: distribution names whose installed versions to record (missing ones map to ``None``).

    Returns:
        A JSON-serialisable dict: python, torch, threads, CPU model, logical CPU count, device, GPU name,
        and the requested package versions.
    """
    from importlib import metadata

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "device": str(device),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    packages = {}
    for name in extra_packages:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    info["packages"] = packages
    return info
