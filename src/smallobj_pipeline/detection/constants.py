"""Constants shared by several modules, each written once: torchvision's detection defaults,
ImageNet's pixel statistics, the architectures and optimizers offered, and the metric keys that
the training log, the registry and the reports copy from the evaluation.

torchvision's values are those of ``FasterRCNN.__init__`` and ``_default_anchorgen`` (torchvision
0.2x); they are the defaults the model factory applies to ``auto`` settings and the baseline the
small-object defaults are compared with.
"""

from __future__ import annotations

# ---------------------------------------------------------------------- torchvision's Faster R-CNN
TORCHVISION_ANCHOR_SIZES = (32, 64, 128, 256, 512)  # one size per FPN level (P2-P6)
TORCHVISION_ASPECT_RATIOS = (0.5, 1.0, 2.0)  # shared by every level
TORCHVISION_MIN_SIZE = 800  # short side of the resized input
TORCHVISION_MAX_SIZE = 1333  # cap on the long side of the resized input
TORCHVISION_DETECTIONS_PER_IMG = 100  # detections kept per image
TORCHVISION_RPN_PRE_NMS = {"train": 2000, "test": 1000}  # proposals per level before NMS
TORCHVISION_RPN_POST_NMS = {"train": 2000, "test": 1000}  # proposals kept after NMS
NUM_FEATURE_MAPS = 5  # FPN on layer1-4 plus LastLevelMaxPool

# ---------------------------------------------------------------------- architectures
VARIANTS = ("v1", "v2")  # fasterrcnn_resnet50_fpn / fasterrcnn_resnet50_fpn_v2 heads
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")

# ---------------------------------------------------------------------- pixel statistics
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, on [0, 1] pixels
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_GRAY_MEAN = round(sum(IMAGENET_MEAN) / 3, 6)  # 0.449: one channel
IMAGENET_GRAY_STD = round(sum(IMAGENET_STD) / 3, 6)  # 0.226

# ---------------------------------------------------------------------- training
OPTIMIZERS = ("sgd", "adamw")

# ---------------------------------------------------------------------- metric keys
# COCO summary numbers computed by evaluation.metrics
COCO_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "ar_100")
# the validation metrics copied into the training history and into the registry's decisions
SUMMARY_METRIC_KEYS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "iou_per_prediction",
    "iou_per_gt",
    "precision",
    "recall",
    "segm_map",
    "segm_map_50",
    "segm_map_small",
)
# the numbers printed on each epoch's log line, in this order
EPOCH_LOG_KEYS = ("val_loss", "map_50", "map", "iou_per_prediction", "iou_per_gt")
