"""Backbone pretraining pipeline: a ResNet trained as a classifier, saved for
``pretrained: backbone``."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
