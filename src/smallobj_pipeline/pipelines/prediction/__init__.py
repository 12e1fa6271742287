"""Prediction pipeline: a trained model (an experiment's or the champion) on a folder of images."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
