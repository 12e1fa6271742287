"""Kedro datasets of this project. Every save writes to a temporary file and renames it, so an
interrupted run never leaves a half-written output in place of a good one."""

from .coco_directory import CocoDirectoryDataset
from .files import CSVDataset, FigureDataset, HTMLDataset, JSONDataset
from .prediction_output import PredictionOutputDataset
from .torch_checkpoint import TorchCheckpointDataset

__all__ = [
    "CocoDirectoryDataset",
    "CSVDataset",
    "FigureDataset",
    "HTMLDataset",
    "JSONDataset",
    "PredictionOutputDataset",
    "TorchCheckpointDataset",
]
