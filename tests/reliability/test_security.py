"""Security checks on the package source (AST scan) and on every checkpoint loader (pickled objects refused)."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import monai_synth

PACKAGE = Path(monai_synth.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _is_const(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def scan(source: str, filename: str = "<src>") -> list[str]:
    """Unsafe calls in ``source``: ``torch.load`` without ``weights_only=True``, ``np.load(allow_pickle=True)``,
    builtin ``eval``/``exec``/``compile``, ``pickle``/``dill`` loads, ``yaml.load`` without a safe loader /
    ``yaml.unsafe_load``, ``os.system`` and ``subprocess`` with ``shell=True``."""
    tree = ast.parse(source, filename)
    torch_aliases = {"torch"}
    numpy_aliases = {"np", "numpy"}
    bare_torch_load = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "torch":
                    torch_aliases.add(a.asname or "torch")
                if a.name == "numpy":
                    numpy_aliases.add(a.asname or "numpy")
        if isinstance(node, ast.ImportFrom) and node.module == "torch":
            bare_torch_load |= {a.asname or a.name for a in node.names if a.name == "load"}
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno}"
        head, _, attr = name.rpartition(".")
        if (attr == "load" and head in torch_aliases) or name in bare_torch_load:
            if not _is_const(_kw(node, "weights_only"), True):
                bad.append(f"{where}: torch.load without weights_only=True")
        if attr == "load" and head in numpy_aliases and _kw(node, "allow_pickle") is not None:
            if not _is_const(_kw(node, "allow_pickle"), False):
                bad.append(f"{where}: np.load with allow_pickle not False")
        if name in ("eval", "exec", "compile"):
            bad.append(f"{where}: builtin {name}()")
        if name == "__import__" and not (node.args and isinstance(node.args[0], ast.Constant)):
            bad.append(f"{where}: __import__ of a computed name")
        if name in ("pickle.load", "pickle.loads", "dill.load", "dill.loads", "cloudpickle.load", "yaml.unsafe_load"):
            bad.append(f"{where}: {name}")
        if name == "yaml.load":
            loader = _dotted(_kw(node, "Loader") or ast.Constant(None))
            if not loader.endswith(("SafeLoader", "CSafeLoader")):
                bad.append(f"{where}: yaml.load without SafeLoader")
        if name == "os.system" or (head == "subprocess" and _is_const(_kw(node, "shell"), True)):
            bad.append(f"{where}: shell command")
    return bad


@pytest.mark.parametrize(
    "snippet,n_bad",
    [
        ("import torch\ntorch.load('x')", 1),
        ("import torch\ntorch.load('x', weights_only=False)", 1),
        ("import torch\ntorch.load('x', weights_only=True)", 0),
        ("import torch as T\nT.load('x')", 1),
        ("from torch import load\nload('x')", 1),
        ("import numpy as np\nnp.load('x', allow_pickle=True)", 1),
        ("import numpy as np\nnp.load('x', allow_pickle=False)", 0),
        ("import numpy as np\nnp.load('x')", 0),
        ("eval(user_string)", 1),
        ("exec(code)", 1),
        ("__import__(name)", 1),
        ("__import__('mlflow.entities')", 0),
        ("model.eval()", 0),
        ("import pickle\npickle.loads(b)", 1),
        ("import yaml\nyaml.load(s)", 1),
        ("import yaml\nyaml.load(s, Loader=yaml.SafeLoader)", 0),
        ("import subprocess\nsubprocess.run(cmd, shell=True)", 1),
    ],
    ids=lambda v: v if isinstance(v, int) else v.split("\n")[-1],
)
def test_scanner_catches_unsafe_calls(snippet, n_bad):
    assert len(scan(snippet)) == n_bad


def test_package_has_no_unsafe_calls():
    assert len(SOURCES) > 20
    bad = [b for path in SOURCES for b in scan(path.read_text(), str(path.relative_to(PACKAGE.parent)))]
    assert not bad, "\n".join(bad)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/monai_synth_pickle_payload_ran"),))


def _evil_checkpoint(path: Path) -> Path:
    net = torch.nn.Linear(2, 2)
    torch.save({"network": net.state_dict(), "ema": None, "payload": _Payload()}, path)
    return path


def _load_checkpoint(p):
    from monai_synth.handlers.checkpoint import load_checkpoint

    return load_checkpoint(p, network=torch.nn.Linear(2, 2))


def _load_weights_for_sampling(p):
    from monai_synth.handlers import load_weights_for_sampling

    return load_weights_for_sampling(torch.nn.Linear(2, 2), p)


def _load_weights_from_checkpoint_dir(p):
    from monai_synth.handlers import load_weights_for_sampling

    p.rename(p.with_name("checkpoint_epoch00001.pt"))
    return load_weights_for_sampling(torch.nn.Linear(2, 2), p.parent)


def _build_classifier(p):
    from monai_synth.networks import build_classifier

    return build_classifier("resnet10", pretrained_path=p)


def _evaluate_image_set(p):
    from monai_synth.evaluate import load_image_set

    return load_image_set(p)


@pytest.mark.parametrize(
    "loader",
    [
        _load_checkpoint,
        _load_weights_for_sampling,
        _load_weights_from_checkpoint_dir,
        _build_classifier,
        _evaluate_image_set,
    ],
    ids=lambda f: f.__name__.lstrip("_"),
)
def test_every_checkpoint_loader_refuses_pickled_objects(loader, tmp_path):
    marker = Path("/tmp/monai_synth_pickle_payload_ran")
    marker.unlink(missing_ok=True)
    p = _evil_checkpoint(tmp_path / "evil.pt")
    # refusing is what matters here; whether the message is clear is checked in test_bad_input.py
    with pytest.raises((ValueError, RuntimeError, pickle.UnpicklingError)):
        loader(p)
    assert not marker.exists(), "the pickle payload was executed"


def test_npz_with_pickled_object_is_refused_everywhere(tmp_path):
    from monai_synth.data import load_medmnist_npz

    p = tmp_path / "x.npz"
    np.savez(p, train_images=np.array([_Payload()], dtype=object), train_labels=np.zeros(1))
    with pytest.raises(ValueError, match="x.npz"):
        load_medmnist_npz(p, "train")
    assert not Path("/tmp/monai_synth_pickle_payload_ran").exists()
