"""Exceptions raised for bad user input. Each message names the file, id or field at fault."""


class DatasetError(ValueError):
    """A dataset (annotations or images) is malformed or inconsistent."""


class ConfigError(ValueError):
    """A parameter or experiment declaration is invalid."""


class WeightsError(RuntimeError):
    """A pretrained weight file or checkpoint is missing, untrusted or incompatible."""
