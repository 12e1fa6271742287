"""Sample pipeline: (re)generate the bundled sample dataset at ``dataset.sample.root``."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
