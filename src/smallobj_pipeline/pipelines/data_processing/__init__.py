"""Data pipeline: load (creating the bundled sample when configured) -> validate -> split ->
statistics."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
