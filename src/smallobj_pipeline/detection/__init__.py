"""Detection library: plain Python/PyTorch code with no Kedro imports.

Modules, one job each:
- ``coco``: COCO directory model (lazy image access, category mapping, safe paths).
- ``io``: atomic writes (write to a temporary file, then rename).
- ``sample_data``: deterministic generator of the bundled small-object dataset.
- ``validation``: great-expectations checks on the annotation and image tables.
- ``split``: deterministic, image-grouped train/val/test split.
- ``stats``: dataset statistics (sizes, areas, objects per image).
"""
