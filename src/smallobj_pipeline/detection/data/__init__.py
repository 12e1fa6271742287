"""Data: everything between the user's COCO files and the tensors a model sees.

``coco`` (reading, placing and fingerprinting a COCO dataset), ``validation/`` (the checks run
before training: tables, expectations, policy), ``split`` and ``stats`` (splits and dataset
statistics), ``intensity`` (bit depth and pixel scaling), ``augment`` (albumentations
pipelines), ``dataset`` (the torch ``Dataset``), ``sample`` (the bundled synthetic sample),
``hashing`` (the content-hash cache).
"""
