"""Scheduled retraining: validate the current data, train a challenger, promote it only if it
beats the champion on the same test split; and rollback to the previous champion."""

from .pipeline import create_pipeline, create_rollback_pipeline

__all__ = ["create_pipeline", "create_rollback_pipeline"]
