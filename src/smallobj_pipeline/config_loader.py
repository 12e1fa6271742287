"""The project's config loader: Kedro's ``OmegaConfigLoader`` whose YAML errors name the file.

Kedro 1.7 reads each config file into an unnamed ``io.StringIO`` before parsing it, so PyYAML's
message says ``in "<file>"``; for scanner and parser errors Kedro adds the path (with 0-based
line and column, and without saying what is wrong), and other YAML errors (a duplicate key, an
undefined alias, a refused ``!!python`` tag) reach the user with no file name at all.
:class:`ProjectConfigLoader` (``CONFIG_LOADER_CLASS`` in ``settings.py``) catches any YAML or
UTF-8 decoding error, finds the file at fault, and raises :class:`ConfigFileError`: one message
with the path, the 1-based line and column, what is wrong, and the line with a caret under the
column. It is a ``click.ClickException``, so ``kedro run`` prints ``Error: <message>`` and exits
with 1, without a traceback.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import yaml
from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

from smallobj_pipeline.detection.errors import ConfigError


class ConfigFileError(click.ClickException, ConfigError):
    """A config file is not valid YAML (or not UTF-8). ``path``, ``line`` and ``column``
    (1-based; None when unknown) say where."""

    def __init__(self, message: str, path: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.path, self.line, self.column = path, line, column


class _NamedText(io.StringIO):
    """Text that PyYAML names in its marks (it reads the stream's ``name``)."""

    def __init__(self, text: str, name: str):
        super().__init__(text)
        self.name = name


def _excerpt(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    gutter = f"{line:>5} | "
    return f"\n{gutter}{lines[line - 1]}\n{' ' * (len(gutter) - 2)}| {' ' * (column - 1)}^"


def yaml_error(path: str, text: str, exc: yaml.YAMLError) -> ConfigFileError:
    """A :class:`ConfigFileError` for ``exc`` raised while parsing ``text`` read from ``path``."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return ConfigFileError(f"Invalid YAML in {path}: {exc}", path)
    line, column = mark.line + 1, mark.column + 1
    problem = getattr(exc, "problem", None) or "invalid YAML"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.index != mark.index:
        where = f"line {context_mark.line + 1}, column {context_mark.column + 1}"
        context = f"{context} started at {where}"
    detail = f"{problem} ({context})" if context else problem
    return ConfigFileError(
        f"Invalid YAML in {path}, line {line}, column {column}: {detail}."
        + _excerpt(text, line, column),
        path,
        line,
        column,
    )


def decode_error(path: str, data: bytes, exc: UnicodeDecodeError) -> ConfigFileError:
    before = data[: exc.start]
    line = before.count(b"\n") + 1
    column = exc.start - (before.rfind(b"\n") + 1) + 1
    return ConfigFileError(
        f"Config file {path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, "
        f"column {column} (byte offset {exc.start}); save it as UTF-8.",
        path,
        line,
        column,
    )


def check_config_file(path: str, data: bytes) -> ConfigFileError | None:
    """The error parsing ``data`` (the bytes of ``path``) as Kedro does, or None if it parses."""
    try:
        text = data.decode("utf8")
    except UnicodeDecodeError as exc:
        return decode_error(path, data, exc)
    try:
        OmegaConf.load(_NamedText(text, path))
    except yaml.YAMLError as exc:
        return yaml_error(path, text, exc)
    return None


def _same_error(found: ConfigFileError, original: BaseException) -> bool:
    mark = getattr(original, "problem_mark", None)
    if isinstance(original, UnicodeDecodeError) or mark is None:
        return True
    return (found.line, found.column) == (mark.line + 1, mark.column + 1)


class ProjectConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` raising :class:`ConfigFileError` (naming the file, line and column)
    for a config file that is not valid YAML, instead of a message saying ``in "<file>"``."""

    def _read_dir_configs(
        self, conf_path: str, patterns: Iterable[str], *args: Any, **kwargs: Any
    ) -> dict:
        patterns = list(patterns)
        try:
            return super()._read_dir_configs(conf_path, patterns, *args, **kwargs)
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            # Kedro re-raises scanner and parser errors as a ParserError "from" the original
            original = exc.__cause__ if isinstance(exc.__cause__, yaml.YAMLError) else exc
            found = self._find_file_error(conf_path, patterns, original)
            if found is None:
                raise
            raise found from None

    def _find_file_error(
        self, conf_path: str, patterns: list[str], original: BaseException
    ) -> ConfigFileError | None:
        """Parse the files Kedro read for ``patterns`` again, each under its own name; the first
        whose error matches ``original`` (else the first that fails) is the one at fault."""
        paths = set()
        for pattern in patterns:
            for each in self._fs.glob(Path(f"{conf_path!s}/{pattern}").as_posix()):
                if (
                    not self.ignore_hidden or not self._is_hidden(each)
                ) and self._is_valid_config_path(Path(each)):
                    paths.add(Path(each).as_posix())
        failures = []
        for path in sorted(paths):
            try:
                with self._fs.open(path) as fh:
                    data = fh.read()
            except OSError:
                continue
            error = check_config_file(path, data)
            if error is not None:
                if _same_error(error, original):
                    return error
                failures.append(error)
        return failures[0] if failures else None
