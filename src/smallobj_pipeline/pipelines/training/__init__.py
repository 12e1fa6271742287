"""Training pipeline: one Kedro namespace per declared experiment."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
