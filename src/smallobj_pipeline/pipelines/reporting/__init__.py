"""Report pipeline: experiments.csv, report.html and the plots, from saved outputs."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
