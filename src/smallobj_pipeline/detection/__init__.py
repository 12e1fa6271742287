"""Detection library: plain Python/PyTorch code with no Kedro imports (the Kedro side is
``smallobj_pipeline.pipelines``, which only wires these functions to the catalog).

Subpackages, one job each:
- ``data``: COCO datasets, validation, splits, statistics, intensity scaling, augmentation.
- ``modeling``: model configs and the Faster R-CNN factory, anchors, pretrained weight files.
- ``engine``: the training loop and its hooks, experiment resolution, the ``torchrun`` entry point.
- ``evaluation``: inference, sliced inference, COCO metrics, prediction on new images.
- ``reporting``: the HTML report, its figures and the one box-drawing routine.
- ``pretraining``: backbone pretraining on in-domain crops.

Shared by all: ``constants`` (torchvision and ImageNet numbers, metric keys, choices),
``errors`` (the exceptions users see), ``io`` (atomic writes, JSON),
``checkpoint`` (the one place that calls ``torch.load``).
"""
