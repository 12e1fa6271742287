"""Modeling: building detectors. ``config`` declares the ``model`` section (and the pydantic
plumbing every typed config section shares), ``factory`` turns a model config into a torchvision
Faster R-CNN, ``anchors`` derives the small-object defaults from dataset statistics, ``weights``
finds and checks pretrained weight files (no downloads).
"""
