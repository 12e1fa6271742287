"""Kedro datasets of this project: kedro-datasets' classes (or Kedro's base class where none
exists) with only what the project needs overridden. Every local save writes to a temporary file
and renames it, so an interrupted run never leaves a half-written output in place of a good one;
``versioned: true`` works on all but the directory datasets (COCO folder, prediction output)."""

from .coco_directory import CocoDirectoryDataset
from .files import CSVDataset, FigureDataset, HTMLDataset, JSONDataset, PartitionsDataset
from .prediction_output import PredictionOutputDataset
from .torch_checkpoint import TorchCheckpointDataset

__all__ = [
    "CocoDirectoryDataset",
    "CSVDataset",
    "FigureDataset",
    "HTMLDataset",
    "JSONDataset",
    "PartitionsDataset",
    "PredictionOutputDataset",
    "TorchCheckpointDataset",
]
