"""Modeling: building detectors. ``factory`` turns a model config into a torchvision Faster R-CNN,
``anchors`` derives the small-object defaults from dataset statistics, ``weights`` finds and checks
pretrained weight files (no downloads).
"""
