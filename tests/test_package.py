"""Package structure: ``import monai_synth`` alone registers the readers and exposes the subpackages; no cycles."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

import nibabel as nib
import numpy as np

import monai_synth
from monai_synth.data import write_demo_dicom

PACKAGE = Path(monai_synth.__file__).resolve().parent
ROOT = PACKAGE.parent


def _fresh_python(code: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter (nothing imported by this test session can hide a missing import)."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)  # fmt: skip


def test_import_monai_synth_alone_registers_the_readers(tmp_path):
    img = (np.arange(6 * 10).reshape(6, 10) * 3).astype(np.uint16)
    dcm = write_demo_dicom(tmp_path / "a.dcm", img, "cxr")
    nii = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(img.T.astype(np.float32), np.eye(4)), nii)
    proc = _fresh_python(f"""
        import monai_synth  # the only monai_synth import
        from monai.transforms import LoadImage
        from monai.transforms.io.array import SUPPORTED_READERS
        assert {{"simpleitkreader", "clinicaldicomreader"}} <= set(SUPPORTED_READERS)  # lower-case keys
        a = LoadImage(reader="ClinicalDicomReader", image_only=True)({str(dcm)!r})
        b = LoadImage(reader="SimpleITKReader", image_only=True)({str(nii)!r})
        print("SHAPES", tuple(a.shape), tuple(b.shape), float(a.sum()), float(b.sum()))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("SHAPES"))
    total = float(img.sum())
    assert line == f"SHAPES (10, 6) (10, 6) {total} {total}", line  # MONAI order: (columns, rows)


def test_import_monai_synth_exposes_the_subpackages():
    proc = _fresh_python("""
        import monai_synth
        names = ["data", "transforms", "utils", "apps", "engines", "handlers", "inferers", "metrics", "networks"]
        missing = [n for n in names if not hasattr(monai_synth, n)]
        missing += [f"apps.{n}" for n in ("augmentation", "guided") if not hasattr(monai_synth.apps, n)]
        assert monai_synth.augmentation is monai_synth.apps.augmentation
        assert monai_synth.guided is monai_synth.apps.guided
        checks = {
            "apps.augmentation.run_pipeline": monai_synth.apps.augmentation.run_pipeline,
            "apps.guided.GuidedSampler": monai_synth.apps.guided.GuidedSampler,
            "transforms.HUWindowd": monai_synth.transforms.HUWindowd,
            "inferers.sample": monai_synth.inferers.sample,
            "handlers.load_weights_for_sampling": monai_synth.handlers.load_weights_for_sampling,
            "data.load_labelled_splits": monai_synth.data.load_labelled_splits,
        }
        print("MISSING", missing, len(checks))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MISSING [] 6" in proc.stdout, proc.stdout


# ------------------------------------------------------------------------------------------------ import cycles
def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST):
    """Every import node of a module, top level and inside functions, except ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of monai_synth it imports}``; ``from pkg import name`` points at ``pkg.name`` when that is a
    module, else at ``pkg`` (its ``__init__``)."""
    modules = _module_names()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            for target in targets:
                if target.split(".")[0] == "monai_synth" and (dep := resolve(target)) and dep != mod:
                    graph[mod].add(dep)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle ``[a, b, ..., a]`` per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for comp in components:  # the shortest way back to the first module, inside the component
        start, members = comp[0], set(comp)
        prev: dict[str, str | None] = {start: None}
        queue, last = deque([start]), None
        while queue and last is None:
            v = queue.popleft()
            for w in sorted(graph[v] & members):
                if w == start:
                    last = v
                    break
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
        path = [last]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append([*reversed(path), start])
    return cycles


def test_cycle_finder_on_a_known_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_sees_top_level_and_function_level_imports():
    graph = import_graph()
    assert "monai_synth.data.image_io" in graph["monai_synth.data.splits"]  # top level
    assert "monai_synth.data.datalists" in graph["monai_synth.data.splits"]  # inside load_labelled_splits
    assert "monai_synth.apps.augmentation.generator" in graph["monai_synth.apps.augmentation"]  # relative import


def test_no_import_cycle_inside_monai_synth():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles inside monai_synth:\n" + "\n".join(" -> ".join(c) for c in cycles)
