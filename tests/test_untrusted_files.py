"""Untrusted files: checkpoints and weights load with ``torch.load(weights_only=True)`` only, so
a file carrying a pickled object is refused with a clear message and its payload never runs;
YAML is parsed safely; names and paths from a dataset or a parameter cannot leave their folder."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from kedro.io.core import DatasetError as KedroDatasetError

from smallobj_pipeline.datasets import TorchCheckpointDataset
from smallobj_pipeline.detection.checkpoint import load_checkpoint, save_checkpoint
from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.engine.experiment import check_experiment_name, resolve_experiment
from smallobj_pipeline.detection.errors import ConfigError, DatasetError, WeightsError
from smallobj_pipeline.detection.modeling import weights as W

SRC = Path(__file__).resolve().parents[1] / "src"
REFUSED = r"refused to load.*(untrusted|unsupported).*weights_only"


class Payload:
    """Unpickling this creates ``marker``: proof that the file's code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class PlainObject:
    """A harmless custom class: still not a tensor or a plain container."""

    def __init__(self):
        self.value = 1


def _malicious(tmp_path: Path, carrier: str) -> tuple[Path, Path]:
    marker = tmp_path / "payload_ran"
    state = {"conv.weight": torch.zeros(2, 2)}
    if carrier == "code":
        data = {"model": state, "config": {"x": Payload(marker)}}
    elif carrier == "object":
        data = {"model": state, "config": PlainObject()}
    else:  # a whole module pickled, as torch.save(model) does
        data = torch.nn.Linear(2, 2)
    path = tmp_path / "shared.pt"
    torch.save(data, path)  # plain torch.save: pickles whatever it is given
    assert not marker.exists()
    return path, marker


def _catalog_load(path):
    """As the Kedro catalog loads model files: Kedro wraps the dataset's error in its own
    DatasetError, whose message ends with ours."""
    try:
        return TorchCheckpointDataset(str(path)).load()
    except KedroDatasetError as exc:
        assert isinstance(exc.__cause__, WeightsError), repr(exc.__cause__)
        raise exc.__cause__ from None


LOADERS = {
    "load_checkpoint": load_checkpoint,
    "weights.load_state_dict": W.load_state_dict,
    "TorchCheckpointDataset.load": _catalog_load,
}


@pytest.mark.parametrize("carrier", ["code", "object", "module"])
@pytest.mark.parametrize("loader", list(LOADERS))
def test_a_checkpoint_with_pickled_objects_is_refused_and_its_code_never_runs(
    tmp_path, loader, carrier
):
    path, marker = _malicious(tmp_path, carrier)
    with pytest.raises(WeightsError, match=REFUSED) as excinfo:
        LOADERS[loader](path)
    assert str(path) in str(excinfo.value)
    assert not marker.exists()


def test_resuming_from_a_planted_checkpoint_is_refused(tmp_path):
    import interrupt_run as R

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    marker = tmp_path / "payload_ran"
    torch.save({"model": {}, "epoch": 0, "x": Payload(marker)}, ckpt / "last.pt")
    trainer = R.make_trainer(R.make_dataset(tmp_path / "data"), ckpt, epochs=1, resume=True)
    with pytest.raises(WeightsError, match=REFUSED):
        trainer.fit()
    assert not marker.exists()


def test_what_the_project_saves_loads_back(tmp_path):
    save_checkpoint(
        {
            "model": {"w": torch.ones(3)},
            "config": {"backbone": "resnet18", "sizes": [8, 16]},
            "history": [{"epoch": 1, "loss": 0.5}],
        },
        tmp_path / "ok.pt",
    )
    data = load_checkpoint(tmp_path / "ok.pt")
    assert data["config"]["sizes"] == [8, 16] and torch.equal(data["model"]["w"], torch.ones(3))
    assert set(W.load_state_dict(tmp_path / "ok.pt")) == {"w"}


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04 truncated zip"])
def test_a_damaged_weight_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    for loader in LOADERS.values():
        with pytest.raises(WeightsError, match=r"broken\.pt: not a readable PyTorch"):
            loader(path)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_the_source_loads_torch_files_with_weights_only_and_yaml_safely():
    """Every torch.load in the package passes weights_only=True; nothing unpickles or loads
    YAML unsafely."""
    forbidden = {
        "pickle.load",
        "pickle.loads",
        "yaml.load",
        "yaml.unsafe_load",
        "yaml.full_load",
        "torch.jit.load",
        "dill.load",
        "joblib.load",
        "numpy.load",
        "np.load",
    }
    found_torch_load = 0
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for call, name in _calls(tree):
            where = f"{path.relative_to(SRC)}:{call.lineno}"
            if name == "torch.load":
                found_torch_load += 1
                kw = {k.arg: k.value for k in call.keywords}
                assert (
                    "weights_only" in kw
                    and isinstance(kw["weights_only"], ast.Constant)
                    and kw["weights_only"].value is True
                ), f"{where}: torch.load without weights_only=True"
            assert name not in forbidden, f"{where}: {name} can run code from an untrusted file"
    assert (
        found_torch_load == 1
    )  # one loader (checkpoint.load_checkpoint) serves checkpoints and weights


def test_parameters_yaml_with_python_tags_is_refused(tmp_path):
    """Kedro's OmegaConfigLoader (the project's config loader) parses YAML safely."""
    from kedro.config import OmegaConfigLoader

    from smallobj_pipeline.settings import CONFIG_LOADER_ARGS

    marker = tmp_path / "payload_ran"
    for env in ("base", "local"):
        (tmp_path / "conf" / env).mkdir(parents=True)
    (tmp_path / "conf" / "base" / "parameters.yml").write_text(
        f"experiments:\n  evil: !!python/object/apply:builtins.open ['{marker}', 'w']\n"
    )
    loader = OmegaConfigLoader(conf_source=str(tmp_path / "conf"), **CONFIG_LOADER_ARGS)
    with pytest.raises(Exception, match=r"python/object/apply"):
        loader["parameters"]
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "/tmp/x", "ok name", "", "évil"])
def test_experiment_names_cannot_become_paths(name):
    with pytest.raises(ConfigError, match="experiment name .* is not valid"):
        check_experiment_name(name)
    with pytest.raises(ConfigError, match="is not valid"):
        resolve_experiment(name, {"model": {}, "training": {}}, {})


@pytest.mark.parametrize("file_name", ["../outside.png", "images/../../outside.png", "/etc/passwd"])
def test_dataset_file_names_cannot_leave_the_dataset_on_read_or_when_copied(tmp_path, file_name):
    root = tmp_path / "ds"
    root.mkdir()
    (tmp_path / "outside.png").write_bytes(b"x")
    (root / "annotations.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": file_name, "width": 4, "height": 4}],
                "annotations": [],
                "categories": [{"id": 1}],
            }
        )
    )
    coco = CocoDataset.from_dir(root)
    with pytest.raises(DatasetError, match="image id 1: file_name"):
        coco.read_image(1)
    with pytest.raises(DatasetError, match="file_name"):
        coco.to_dir(tmp_path / "copy")
    assert not any((tmp_path / "copy").rglob("*"))  # refused before anything was written
    assert (tmp_path / "outside.png").read_bytes() == b"x"  # nor overwritten where it points


def test_a_bare_weights_name_is_looked_up_only_in_its_folder(tmp_path):
    (tmp_path / "outside.pt").write_bytes(b"x")
    folder = tmp_path / "backbones"
    folder.mkdir()
    with pytest.raises(
        WeightsError, match=r"named 'outside' not found: expected file 'outside\.pt' in"
    ):
        W.resolve_weight_file("outside", "backbone", "resnet18", search_dirs=[folder])
