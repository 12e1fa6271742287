"""Evaluation: ``inference`` runs a model over a dataset, ``sliced`` tiles large images,
``metrics`` scores detections against COCO ground truth, ``predict`` serves a folder of new images.
"""
