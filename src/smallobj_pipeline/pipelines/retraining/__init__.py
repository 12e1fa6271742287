"""Scheduled retraining: validate the current data, train a challenger, promote it only if it
beats the champion on the same test split."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
