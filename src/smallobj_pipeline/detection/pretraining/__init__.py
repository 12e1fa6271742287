"""Pretraining without downloads: a backbone pretrained as a classifier on in-domain crops (or
an image-classification folder), saved for the model factory's ``pretrained: backbone`` mode.

Modules, one job each: ``config`` (the ``pretrain:`` settings), ``crops`` (crop geometry and
extraction), ``datasets`` (crop and folder classification datasets), ``classifier`` (the ResNet
classifier, its training on the engine's loop, its evaluation), ``io`` (save/load the backbone
file), ``run`` (the whole job: data, training, saving), ``plots`` (the training curve).
"""
