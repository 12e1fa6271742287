"""The torch/torchvision pair must be a matching standard build: torchvision's C++ ops load."""

import torch
import torchvision
from torchvision.ops import nms


def test_torchvision_nms_runs_with_installed_torch():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = nms(boxes, scores, iou_threshold=0.5)
    # the second box overlaps the first (IoU 0.81) and is suppressed; the third is kept
    assert keep.tolist() == [0, 2]
    major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    assert (major, minor) >= (2, 14), (
        "the local CPU-only torch 2.13 build cannot load torchvision ops"
    )
    assert torchvision.__version__.split("+")[0].startswith("0.29")
