"""Conventions shared by all bundles (docs/bundles.md): model-zoo layout, one key vocabulary, the recipe as the one
source of diffusion defaults, short expressions, and READMEs whose overrides exist in the configs."""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
from pathlib import Path

import pytest
import yaml
from monai.bundle import ConfigParser

from monai_synth.engines import DiffusionRecipe

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "bundles"
NAMES = ["augmentation_study", "cxr_cfg_ddpm", "lung_ct_ddpm", "mammo_pathology_ddpm"]
DOC = ROOT / "docs" / "bundles.md"
STRUCTURAL = {"imports", "run", "initialize", "finalize"}  # MONAI workflow ids, not vocabulary
# the vocabulary of issue 17: a top-level key or a recipe field of that name
VOCABULARY = [
    "bundle_root", "output_dir", "checkpoint_dir", "device", "seed", "data_source", "data_path", "labels_csv",
    "demo_kind", "demo_n_per_class", "image_size", "window", "recipe", "schedule", "prediction_type",
    "num_train_timesteps", "channels", "attention_levels", "num_res_blocks", "num_head_channels", "norm_num_groups",
    "network_def", "network", "scheduler", "sample_scheduler", "num_inference_steps", "guidance_scale", "eta",
    "sample_batch_size", "sample_dir", "use_ema", "tracking_uri", "experiment",
]  # fmt: skip
# old names that must not appear anywhere in bundles/ (configs, metadata, READMEs)
OLD_NAMES = [
    "ckpt_dir", "ckpt_path", "label_csv", "beta_schedule", "noise_schedule", "noise_scheduler", "sampling_scheduler",
    "samples_dir", "learning_rate", "data_split", "load_trained_network", "load_diffusion_training_data",
    "run_guided_sampling", "monai_synth.engines.guided", "monai_synth.pipeline", "monai_synth.apps.guided.guided",
    "seed000_table2", "seed001_increments",
]  # fmt: skip
# names that are fine as arguments of a component but not as top-level keys (a second source of a recipe value)
OLD_KEYS = {"model", "dicom_dir", "demo_dir", "max_epochs", "lr", "batch_size", "ema_decay", "loss", "channels",
            "attention_levels", "num_res_blocks", "num_head_channels", "norm_num_groups", "num_train_timesteps",
            "cond_drop_prob", "grad_clip_norm", "schedule", "prediction_type"}  # fmt: skip
RUN_ARGS = {"config_file", "meta_file", "logging_file", "tracking", "run_id", "init_id", "final_id", "args_file",
            "nproc_per_node"}  # fmt: skip
RECIPE_FIELDS = {f.name: f for f in dataclasses.fields(DiffusionRecipe)}


def configs(name: str) -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((BUNDLES / name / "configs").glob("*.yaml"))}


def top_level_keys(name: str) -> set[str]:
    return {k for cfg in configs(name).values() for k in cfg if "#" not in k}


def recipe_overrides(name: str) -> dict:
    recipe = configs(name)["common.yaml"]["recipe"]
    return {k: v for k, v in recipe.items() if not k.startswith("_") and not (isinstance(v, str) and v.startswith("@"))}


def doc_table(heading: str) -> list[list[str]]:
    """Rows (lists of cells, header row dropped) of the first table after ``heading`` in docs/bundles.md."""
    text = DOC.read_text().split(heading, 1)[1]
    rows, started = [], False
    for line in text.splitlines():
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif started:
            break
    return rows[1:]  # without the header


def bundle_set(cell: str) -> set[str]:
    if cell == "all":
        return set(NAMES)
    cell = re.sub(r"\s*\([^)]*\)", "", cell)  # "name (`file.yaml`)": where in the bundle, for the reader
    return {b.strip() for b in cell.split(",") if b.strip()}


def strings(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(v, f"{path}#{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from strings(v, f"{path}#{i}")
    elif isinstance(obj, str):
        yield path, obj


@pytest.mark.parametrize("name", NAMES)
def test_model_zoo_layout(name):
    root = BUNDLES / name
    for rel in ("configs/metadata.json", "configs/logging.conf", "docs/README.md", "LICENSE"):
        assert (root / rel).is_file(), f"{name}: {rel} missing"
    text = (root / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) > 190  # the full licence text, not a pointer
    conf = (root / "configs" / "logging.conf").read_text()
    assert conf == (BUNDLES / "cxr_cfg_ddpm" / "configs" / "logging.conf").read_text()


def _old_name_pattern(old: str) -> str:
    """A whole-word match; a plain name right after a dot is an attribute (``@recipe.sampling_scheduler(...)``, the
    recipe's method), not the old key."""
    return rf"\b{re.escape(old)}\b" if "." in old else rf"(?<![.\w]){re.escape(old)}\b"


def test_no_old_names_anywhere_in_bundles():
    hits = []
    for path in sorted(BUNDLES.rglob("*")):
        if path.suffix not in {".yaml", ".json", ".md", ".conf"}:
            continue
        text = path.read_text()
        hits += [f"{path.relative_to(ROOT)}: {old}" for old in OLD_NAMES if re.search(_old_name_pattern(old), text)]
    assert hits == []
    assert re.search(_old_name_pattern("sampling_scheduler"), "sampling_scheduler: x")  # the key is still caught
    assert not re.search(_old_name_pattern("sampling_scheduler"), '"$@recipe.sampling_scheduler(@s)"')


@pytest.mark.parametrize("name", NAMES)
def test_no_old_or_shadowing_top_level_keys(name):
    keys = top_level_keys(name)
    assert sorted(keys & OLD_KEYS) == []
    refs = {r for cfg in configs(name).values() for _, s in strings(cfg) for r in re.findall(r"@([\w#]+)", s)}
    assert sorted(r for r in refs if r.split("#")[0] in OLD_KEYS | set(OLD_NAMES)) == []


def test_vocabulary_table_matches_the_configs():
    rows = doc_table("## Vocabulary")
    table = {cells[0].strip("`"): bundle_set(cells[2]) for cells in rows}
    used: dict[str, set[str]] = {}
    for name in NAMES:
        for key in top_level_keys(name) - STRUCTURAL:
            used.setdefault(key, set()).add(name)
    shared = {k for k, b in used.items() if len(b) > 1}
    assert sorted(shared - set(table)) == [], "keys used by several bundles must be in the vocabulary table"
    wrong = {k: (sorted(table[k]), sorted(used.get(k, ()))) for k in table if table[k] != used.get(k, set())}
    assert wrong == {}, "the bundles column of docs/bundles.md differs from the configs"
    missing = [k for k in VOCABULARY if k not in table and k not in RECIPE_FIELDS]
    assert missing == []


def test_recipe_table_matches_diffusion_recipe_and_the_overrides():
    rows = doc_table("## The recipe: one source of defaults")
    documented = {cells[0].strip("`"): cells for cells in rows}
    assert sorted(documented) == sorted(RECIPE_FIELDS)
    # overridden: in common.yaml's recipe, or as recipe#<field> in another config of the bundle
    elsewhere = {n: {k.split("#")[1] for c in configs(n).values() for k in c if k.startswith("recipe#")} for n in NAMES}
    overridden = {f: {n for n in NAMES if f in recipe_overrides(n) or f in elsewhere[n]} for f in RECIPE_FIELDS}
    for field, cells in documented.items():
        spec = RECIPE_FIELDS[field]
        if spec.default is dataclasses.MISSING:  # a nested recipe: documented as its class's default instance
            assert cells[1] == f"`{spec.default_factory.__name__}()`", field
        else:
            assert ast.literal_eval(cells[1].strip("`")) == spec.default, field
        assert bundle_set(cells[3]) == overridden[field], field
    for name in NAMES:  # every bundle trains/samples through a DiffusionRecipe and comments its overrides
        assert configs(name)["common.yaml"]["recipe"]["_target_"] == "monai_synth.engines.DiffusionRecipe"
        lines = (BUNDLES / name / "configs" / "common.yaml").read_text().split("\nrecipe:\n", 1)[1].splitlines()
        for line in lines:
            if not line.startswith("  "):
                break
            if re.match(r"^  \w+:", line) and not line.strip().startswith("_target_") and "@" not in line:
                assert "# " in line and "override" in line, f"{name}: recipe line without an override comment: {line}"


@pytest.mark.parametrize("name", NAMES)
def test_recipe_references_name_real_fields(name):
    allowed = set(RECIPE_FIELDS) | {n for n in vars(DiffusionRecipe) if not n.startswith("_")}  # fields, methods
    texts = [s for cfg in configs(name).values() for _, s in strings(cfg)]
    texts.append((BUNDLES / name / "docs" / "README.md").read_text())
    refs = {m for t in texts for m in re.findall(r"@recipe\.(\w+)", t)}
    overrides = {m for t in texts for m in re.findall(r"recipe#(\w+)", t)}
    assert sorted((refs | overrides) - allowed) == []


@pytest.mark.parametrize("name", NAMES)
def test_expressions_are_short(name):
    found = [(f, p) for f, cfg in configs(name).items() for p, s in strings(cfg) if s.startswith("$") and len(s) > 100]
    assert found == [], "a `$` expression longer than one short line: use a `_target_` component"


def _readme_commands(name: str) -> list[list[str]]:
    """``monai.bundle run`` commands of the README's bash blocks, shell variables expanded, as argument lists."""
    text = (BUNDLES / name / "docs" / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = block.replace("\\\n", " ")
        variables: dict[str, str] = {}
        for m in re.finditer(r"^(\w+)=(?:\"([^\"]*)\"|'([^']*)'|(\S+))", block, flags=re.M):
            value = " ".join(next(g for g in m.groups()[1:] if g is not None).split())
            variables[m.group(1)] = _expand(value, variables)
        for line in block.splitlines():
            if "monai.bundle run" in line:
                commands.append(shlex.split(_expand(line, variables).split("&&")[-1]))
    return commands


def _expand(text: str, variables: dict[str, str]) -> str:
    for var in sorted(variables, key=len, reverse=True):
        text = text.replace(f"${var}", variables[var])
    return text


def _known(key: str, parser: ConfigParser) -> bool:
    """A config id of the bundle, or a DiffusionRecipe field set with ``--recipe#<field>``."""
    if key.startswith("recipe#"):
        return key.split("#", 1)[1] in RECIPE_FIELDS
    return key in RUN_ARGS or key in parser


def _config_order(path: Path) -> tuple[bool, bool]:
    """Merge order of all of a bundle's configs: common.yaml first, overlays (ids like ``train#sampler``) last."""
    return path.name != "common.yaml", any("#" in k for k in yaml.safe_load(path.read_text()))


def _options(args: list[str]) -> dict[str, str]:
    opts, i = {}, 0
    while i < len(args):
        if args[i].startswith("--"):
            key, _, value = args[i][2:].partition("=")
            if not value and i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            opts[key] = value
        i += 1
    return opts


@pytest.mark.parametrize("name", NAMES)
def test_readme_commands_name_existing_files_and_keys(name):
    commands = _readme_commands(name)
    assert commands, f"{name}: no monai.bundle run command in docs/README.md"
    for args in commands:
        opts = _options(args)
        files = ast.literal_eval(opts["config_file"])
        paths = []
        for f in files:
            path = next((p for p in (BUNDLES / name / f, ROOT / f) if p.is_file()), None)
            assert path is not None, f"{name}: {f} not found"
            paths.append(str(path))
        if "logging_file" in opts:
            assert (BUNDLES / name / opts["logging_file"]).is_file() or (ROOT / opts["logging_file"]).is_file()
        parser = ConfigParser()
        parser.read_config(paths)
        unknown = [k for k in opts if not _known(k, parser)]
        assert unknown == [], f"{name}: {' '.join(args)}"
        for value in opts.values():
            if value and value[0] in "[({":
                ast.literal_eval(value)  # lists, dicts: Python literals that fire parses (True/False, not true)


@pytest.mark.parametrize("name", NAMES)
def test_readme_overrides_in_text_exist(name):
    """Every ``--key`` mentioned in the README (tables and prose too) is a key of the bundle's configs."""
    text = (BUNDLES / name / "docs" / "README.md").read_text()
    parser = ConfigParser()
    parser.read_config([str(p) for p in sorted((BUNDLES / name / "configs").glob("*.yaml"), key=_config_order)])
    keys = set(re.findall(r"--([a-z]\w*(?:#\w+)*)", text))
    assert sorted(k for k in keys if not _known(k, parser)) == []


@pytest.mark.parametrize("name", ["cxr_cfg_ddpm", "lung_ct_ddpm", "mammo_pathology_ddpm"])
def test_common_network_is_pixel_at_any_size_and_train_latent_is_latent(name):
    """common.yaml's network_def is the pixel UNet that train.yaml trains: its recipe must stay pixel at 128 px and
    up (where the recipe default turns latent), and train_latent.yaml must turn it latent."""
    latent = BUNDLES / name / "configs" / "train_latent.yaml"
    files = ["common.yaml"] + (["train_latent.yaml"] if latent.exists() else [])
    for n in range(1, len(files) + 1):
        parser = ConfigParser()
        parser.read_config([str(BUNDLES / name / "configs" / f) for f in files[:n]])
        parser["image_size"] = 128
        recipe = parser.get_parsed_content("recipe", instantiate=True)
        assert recipe.is_latent == (files[n - 1] == "train_latent.yaml"), (name, files[:n])


@pytest.mark.parametrize("name", NAMES)
def test_readme_runs_every_workflow_config(name):
    """Each workflow config (train, sample, evaluate, increments ...) appears in at least one README command, so a
    user reading the README can run every step the bundle ships."""
    used = set()
    for args in _readme_commands(name):
        used.update(Path(f).name for f in ast.literal_eval(_options(args)["config_file"]))
    shipped = {p.name for p in (BUNDLES / name / "configs").glob("*.yaml")} - {"common.yaml"}
    assert sorted(shipped - used) == [], f"{name}: configs no README command runs"
