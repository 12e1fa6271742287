"""A config file that is not valid YAML: the error names the file, line and column
(smallobj_pipeline.config_loader, the project's CONFIG_LOADER_CLASS, and the ConfigCheckHooks
that read the parameters when a Kedro context is created)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner
from kedro.config import MissingConfigException, OmegaConfigLoader

from smallobj_pipeline.config_loader import ConfigFileError, ProjectConfigLoader
from smallobj_pipeline.detection.errors import ConfigError
from smallobj_pipeline.hooks import ConfigCheckHooks
from smallobj_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

REPO = Path(__file__).resolve().parents[1]


def _conf(tmp_path: Path) -> Path:
    """conf/base with a copy of the project's parameters_data.yml, and an empty conf/local."""
    conf = tmp_path / "conf"
    (conf / "base").mkdir(parents=True)
    (conf / "local").mkdir()
    shutil.copy(REPO / "conf" / "base" / "parameters_data.yml", conf / "base")
    return conf


def _break(path: Path, after: str, bad_line: str) -> int:
    """Insert ``bad_line`` after the line ``after``; returns its 1-based line number."""
    lines = path.read_text().splitlines()
    index = lines.index(after) + 1
    lines.insert(index, bad_line)
    path.write_text("\n".join(lines) + "\n")
    return index + 1


def test_the_project_uses_the_loader_that_names_the_file():
    assert CONFIG_LOADER_CLASS is ProjectConfigLoader


def test_a_syntax_error_in_a_parameters_file_names_the_file_line_and_column(tmp_path):
    conf = _conf(tmp_path)
    broken = conf / "base" / "parameters_data.yml"
    line = _break(broken, "  seed: 42", "   bad: [1, 2")  # one space too many: not a mapping

    with pytest.raises(Exception) as plain:  # what Kedro's own loader says
        OmegaConfigLoader(conf_source=str(conf), **CONFIG_LOADER_ARGS)["parameters"]
    assert '"<file>"' in str(plain.value.__cause__)

    with pytest.raises(ConfigFileError) as excinfo:
        ProjectConfigLoader(conf_source=str(conf), **CONFIG_LOADER_ARGS)["parameters"]
    error = excinfo.value
    first, *excerpt = str(error).splitlines()
    assert first == (
        f"Invalid YAML in {broken.as_posix()}, line {line}, column 7: "
        f"mapping values are not allowed here."
    )
    assert excerpt == [f"{line:>5} |    bad: [1, 2", "      |       ^"]
    assert (error.path, error.line, error.column) == (broken.as_posix(), line, 7)
    assert "<file>" not in str(error) and error.__cause__ is None and error.__suppress_context__
    assert isinstance(error, ConfigError) and isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("text", "line", "column", "problem"),
    [
        (
            "a: [1, 2\nb: 3\n",
            2,
            2,
            "expected ',' or ']', but got ':' "
            "(while parsing a flow sequence started at line 1, column 4)",
        ),
        (
            "a: 1\nb: 2\na: 3\n",
            3,
            1,
            "found duplicate key a (while constructing a mapping started at line 1, column 1)",
        ),
        (
            "e: !!python/object/apply:os.system ['true']\n",
            1,
            4,
            "could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        ("a: *nowhere\n", 1, 4, "found undefined alias 'nowhere'"),
        (
            "a:\n\tb: 1\n",
            2,
            1,
            "found character '\\t' that cannot start any token (while scanning for the next token)",
        ),
    ],
)
def test_every_kind_of_yaml_error_names_the_file(tmp_path, text, line, column, problem):
    conf = _conf(tmp_path)
    broken = conf / "local" / "parameters.yml"  # an environment's file, read after base
    broken.write_text(text)
    with pytest.raises(ConfigFileError) as excinfo:
        ProjectConfigLoader(conf_source=str(conf), **CONFIG_LOADER_ARGS)["parameters"]
    assert str(excinfo.value).splitlines()[0] == (
        f"Invalid YAML in {broken.as_posix()}, line {line}, column {column}: {problem}."
    )


def test_a_file_that_is_not_utf8_names_the_file_line_and_column(tmp_path):
    conf = _conf(tmp_path)
    broken = conf / "base" / "catalog.yml"
    broken.write_bytes(b"# ok\nraw:\n  filepath: caf\xe9.csv\n")
    with pytest.raises(ConfigFileError) as excinfo:
        ProjectConfigLoader(conf_source=str(conf), **CONFIG_LOADER_ARGS)["catalog"]
    assert str(excinfo.value) == (
        f"Config file {broken.as_posix()} is not UTF-8 text: byte 0xe9 "
        f"at line 3, column 16 (byte offset 25); save it as UTF-8."
    )


def test_valid_config_loads_as_with_kedros_loader():
    conf = str(REPO / "conf")
    for key in ("parameters", "catalog"):
        ours = ProjectConfigLoader(conf_source=conf, **CONFIG_LOADER_ARGS)[key]
        assert ours == OmegaConfigLoader(conf_source=conf, **CONFIG_LOADER_ARGS)[key]


def test_the_hook_stops_a_run_at_context_creation_with_one_message(tmp_path):
    conf = _conf(tmp_path)
    broken = conf / "base" / "parameters_data.yml"
    line = _break(broken, "  seed: 42", "   bad: [1, 2")
    context = SimpleNamespace(
        config_loader=ProjectConfigLoader(conf_source=str(conf), **CONFIG_LOADER_ARGS)
    )
    with pytest.raises(ConfigFileError, match=rf"{broken.as_posix()}, line {line}, column 7"):
        ConfigCheckHooks().after_context_created(context=context)

    @click.command()
    def run():  # how Kedro's CLI (click) shows it: the message, no traceback, exit code 1
        ConfigCheckHooks().after_context_created(context=context)

    result = CliRunner().invoke(run)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith(f"Error: Invalid YAML in {broken.as_posix()}, line {line}")


def test_the_hook_leaves_other_config_problems_to_kedro(tmp_path):
    empty = tmp_path / "conf"
    (empty / "base").mkdir(parents=True)
    (empty / "local").mkdir()

    class Missing:
        def __getitem__(self, key):
            raise MissingConfigException("no parameters")

    for loader in (ProjectConfigLoader(conf_source=str(empty), **CONFIG_LOADER_ARGS), Missing()):
        ConfigCheckHooks().after_context_created(context=SimpleNamespace(config_loader=loader))
