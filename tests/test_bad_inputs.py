"""The bad-input catalogue: one table, one row per way a hand-assembled dataset goes wrong.

Each row corrupts a small generated dataset, runs the entry points the data pipeline uses
(``CocoDataset.from_dir`` -> ``validate_dataset`` -> ``apply_policy`` -> ``assign_splits`` ->
``compute_stats`` -> reading every image through the training ``DetectionDataset``) under a
policy, and asserts the outcome:

- ``Raises``: our own exception (a :class:`DatasetError`), raised by this project's code with no
  library exception chained to it, whose message names the file / image id / annotation id and
  says what is wrong;
- ``Dropped``: under policy ``drop`` the offender is reported (id and reason) and the rest of
  the chain runs on the cleaned dataset;
- ``Warns``: the chain completes with a WARNING naming what is odd;
- ``Accepted``: the input is valid (converted where documented) and the chain completes.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from smallobj_pipeline.detection.data import coco as coco_module
from smallobj_pipeline.detection.data import validation as V
from smallobj_pipeline.detection.data.augment import build_transform
from smallobj_pipeline.detection.data.coco import CocoDataset, read_header, read_image
from smallobj_pipeline.detection.data.dataset import DetectionDataset
from smallobj_pipeline.detection.data.sample import generate_sample_dataset
from smallobj_pipeline.detection.data.split import assign_splits
from smallobj_pipeline.detection.data.stats import compute_stats
from smallobj_pipeline.detection.errors import DatasetError

PACKAGE_DIR = Path(coco_module.__file__).resolve().parents[1]
SIZE = 64


# ------------------------------------------------------------------------------ the entry points
@dataclass
class Run:
    coco: CocoDataset
    dropped: dict[str, Any]
    stats: dict[str, Any]
    items: dict[Any, tuple[Any, dict]]  # image id -> (image tensor, target)


def run_entry_points(root: Path, policy: str) -> Run:
    coco = CocoDataset.from_dir(root)
    outcome = V.validate_dataset(coco)
    clean, dropped = V.apply_policy(coco, outcome, policy)
    split = assign_splits(clean, seed=0)
    stats = compute_stats(split)
    json.dumps(outcome.to_dict(), allow_nan=False)  # the validation report is strict JSON
    transform = build_transform({"hflip": 0.5, "vflip": 0.5, "rotate90": 0.5}, train=True, seed=0)
    items = {}
    for name, ids in split.splits.items():
        ds = DetectionDataset(
            split, ids, in_channels=1, transform=transform if name == "train" else None
        )
        for i, image_id in enumerate(ids):
            items[image_id] = ds[i]
    return Run(split, dropped, stats, items)


# ------------------------------------------------------------------------------ expected outcomes
@dataclass
class Raises:
    exc: type[BaseException]
    patterns: Callable[
        [dict], list[str]
    ]  # regexes the message must match (given the case's context)


@dataclass
class Dropped:
    kind: str  # "image" or "annotation"
    reason: str  # the check named as the reason


@dataclass
class Warns:
    patterns: Callable[[dict], list[str]]


@dataclass
class Accepted:
    check: Callable[[Run, dict], None]


@dataclass
class Case:
    name: str
    corrupt: Callable[[Path], dict]
    policy: str
    expect: Raises | Dropped | Warns | Accepted


# ------------------------------------------------------------------------------ corruptions
def _load(root: Path) -> dict:
    return json.loads((root / "annotations.json").read_text())


def _save(root: Path, data: dict) -> None:
    (root / "annotations.json").write_text(json.dumps(data))  # NaN / Infinity as Python writes them


def _image(root: Path, index: int) -> tuple[dict, Path]:
    img = _load(root)["images"][index]
    return img, root / img["file_name"]


def _with_json(edit: Callable[[dict], dict]) -> Callable[[Path], dict]:
    def corrupt(root: Path) -> dict:
        data = _load(root)
        ctx = edit(data) or {}
        _save(root, data)
        return ctx

    return corrupt


def truncated_json(root):
    text = (root / "annotations.json").read_text()
    (root / "annotations.json").write_text(text[: len(text) // 2])
    return {"file": "annotations.json"}


def invalid_json(root):
    (root / "annotations.json").write_text("{'images': [], 'annotations': [], 'categories': []}")
    return {"file": "annotations.json"}


def json_not_an_object(root):
    (root / "annotations.json").write_text("[1, 2, 3]")
    return {"file": "annotations.json"}


def truncated_split_file(root):
    text = (root / "train.json").read_text()
    (root / "train.json").write_text(text[:-10])
    return {"file": "train.json"}


def _drop_key(key):
    def edit(data):
        del data[key]
        return {"key": key}

    return _with_json(edit)


def _bbox_value(index, value):
    def edit(data):
        ann = data["annotations"][3]
        ann["bbox"][index] = value
        return {"id": ann["id"], "image_id": ann["image_id"]}

    return _with_json(edit)


@_with_json
def image_id_not_an_integer(data):
    data["images"][2]["id"] = [3]
    return {"index": 2}


@_with_json
def category_id_not_an_integer(data):
    ann = data["annotations"][4]
    ann["category_id"] = "cross"
    return {"id": ann["id"]}


def empty_dataset(root):
    for name in ("train", "val", "test"):
        (root / f"{name}.json").unlink()
    data = _load(root)
    data["images"], data["annotations"] = [], []
    _save(root, data)
    return {}


@_with_json
def no_annotations(data):
    data["annotations"] = []


@_with_json
def no_categories(data):
    data["categories"] = []


def _write_bytes_of_image(index, make: Callable[[bytes], bytes]):
    def corrupt(root):
        img, path = _image(root, index)
        path.write_bytes(make(path.read_bytes()))
        return {"id": img["id"], "file": img["file_name"]}

    return corrupt


def truncated_jpeg(root):
    data = _load(root)
    img = data["images"][2]
    src = root / img["file_name"]
    dst = src.with_suffix(".jpg")
    Image.open(src).save(dst, quality=90)
    src.unlink()
    payload = dst.read_bytes()
    dst.write_bytes(payload[: len(payload) // 2])
    img["file_name"] = str(dst.relative_to(root))
    _save(root, data)
    return {"id": img["id"], "file": img["file_name"]}


def missing_file(root):
    img, path = _image(root, 1)
    path.unlink()
    return {"id": img["id"], "file": img["file_name"]}


def _file_name(value):
    def edit(data):
        img = data["images"][1]
        img["file_name"] = value
        return {"id": img["id"], "file": value}

    return _with_json(edit)


@_with_json
def declared_size_differs(data):
    img = data["images"][4]
    img["width"] += 16  # boxes still fit the declared size: only the size check fails
    return {
        "id": img["id"],
        "file": img["file_name"],
        "declared": f"{img['width']} x {img['height']}",
    }


def rgba_png(root):
    img, path = _image(root, 0)
    gray = np.asarray(Image.open(path))
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 128)])
    Image.fromarray(rgba).save(path)
    assert Image.open(path).mode == "RGBA"
    return {"id": img["id"], "gray": gray}


def png_16bit(root):
    img, path = _image(root, 0)
    gray = np.asarray(Image.open(path))
    Image.fromarray(gray.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode.startswith("I;16")
    return {"id": img["id"], "gray": gray}


def float_tiff(root):
    data = _load(root)
    img = data["images"][3]
    src = root / img["file_name"]
    dst = src.with_suffix(".tif")
    tifffile.imwrite(dst, np.asarray(Image.open(src)).astype(np.float32) / 255.0)
    src.unlink()
    img["file_name"] = str(dst.relative_to(root))
    _save(root, data)
    return {"id": img["id"], "file": img["file_name"]}


def write_big_png(path: Path, width: int, height: int) -> None:
    """A valid 8-bit grayscale PNG of ``width x height`` written row by row (little memory)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    comp = zlib.compressobj(1)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def huge_image(root):
    data = _load(root)
    img = data["images"][5]
    write_big_png(root / img["file_name"], 10_000, 10_000)
    img["width"] = img["height"] = 10_000
    _save(root, data)
    return {"id": img["id"], "file": img["file_name"]}


def _box(edit_box):
    def edit(data):
        ann = data["annotations"][2]
        img = next(i for i in data["images"] if i["id"] == ann["image_id"])
        edit_box(ann["bbox"], img)
        return {"id": ann["id"], "image_id": ann["image_id"]}

    return _with_json(edit)


@_with_json
def unknown_category(data):
    ann = data["annotations"][5]
    ann["category_id"] = 99
    return {"id": ann["id"]}


@_with_json
def duplicate_annotation_id(data):
    first, second = data["annotations"][6], data["annotations"][7]
    second["id"] = first["id"]
    return {"id": first["id"]}


def duplicate_image_id(root):
    for name in ("train", "val", "test"):  # the split files would name the renamed id
        (root / f"{name}.json").unlink()
    data = _load(root)
    a, b = data["images"][3], data["images"][4]
    old = b["id"]
    b["id"] = a["id"]
    for ann in data["annotations"]:
        if ann["image_id"] == old:
            ann["image_id"] = a["id"]
    _save(root, data)
    return {"id": a["id"]}


@_with_json
def dangling_image_id(data):
    ann = data["annotations"][8]
    ann["image_id"] = 4242
    return {"id": ann["id"]}


def class_missing_from_a_split(root):
    val_ids = {img["id"] for img in json.loads((root / "val.json").read_text())["images"]}
    data = _load(root)
    ring, cross = data["categories"][0], data["categories"][1]
    for ann in data["annotations"]:
        if ann["image_id"] in val_ids:
            ann["category_id"] = ring["id"]
    _save(root, data)
    return {"class": cross["name"], "class_id": cross["id"], "split": "val"}


@_with_json
def image_without_boxes(data):
    img = data["images"][1]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != img["id"]]
    return {"id": img["id"]}


# ------------------------------------------------------------------------------ checks of accepted
# inputs
def _converted_to_gray(run, ctx):
    image, _ = run.items[ctx["id"]]
    assert image.shape == (1, SIZE, SIZE)  # 3 channels after dropping alpha, then to the model's 1


def _rgba_read_as_rgb(run, ctx):
    arr = run.coco.read_image(ctx["id"])
    assert arr.dtype == np.uint8 and arr.shape == (SIZE, SIZE, 3)  # alpha dropped
    assert np.array_equal(arr[..., 0], ctx["gray"])
    _converted_to_gray(run, ctx)


def _16bit_scaled(run, ctx):
    arr = run.coco.read_image(ctx["id"], {"mode": "fixed"})
    assert arr.dtype == np.uint8 and np.array_equal(arr, ctx["gray"])  # v * 257 / 257
    faithful = run.coco.read_image(ctx["id"])  # the default (auto): every level kept, in [0, 1]
    assert faithful.dtype == np.float32 and 0.0 <= faithful.min() and faithful.max() <= 1.0
    # every level kept but those beyond the 0.1 / 99.9 percentiles (clipped to 0 and 1)
    assert np.unique(faithful).size >= 0.95 * np.unique(ctx["gray"]).size
    _converted_to_gray(run, ctx)


def _float_tiff_accepted(run, ctx):
    image, _ = run.items[ctx["id"]]
    assert image.dtype == torch.float32 and image.shape == (1, SIZE, SIZE)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert torch.unique(image).numel() > 32  # scaled by its percentiles, not crushed


def _negative_example(run, ctx):
    image, target = run.items[ctx["id"]]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert image.shape[0] == 1
    assert run.dropped == {}


# ------------------------------------------------------------------------------ the table
def _esc(v: Any) -> str:
    return re.escape(str(v))


def _failed(check: str, what: str = "image") -> Callable[[dict], list[str]]:
    """The policy-fail summary: the check, the offender's id listed, and its detail."""
    return lambda ctx: [re.escape(check), rf"{what} ids \[[^\]]*\b{_esc(ctx['id'])}\b"]


def _failed_with(
    check: str, what: str, detail: Callable[[dict], str]
) -> Callable[[dict], list[str]]:
    return lambda ctx: _failed(check, what)(ctx) + [detail(ctx)]


CASES = [
    # --- annotation files
    Case(
        "truncated_json",
        truncated_json,
        "fail",
        Raises(
            DatasetError, lambda c: [r"annotations\.json: invalid JSON at line \d+, column \d+"]
        ),
    ),
    Case(
        "invalid_json",
        invalid_json,
        "fail",
        Raises(DatasetError, lambda c: [r"annotations\.json: invalid JSON at line 1"]),
    ),
    Case(
        "json_not_an_object",
        json_not_an_object,
        "fail",
        Raises(DatasetError, lambda c: [r"annotations\.json: expected a JSON object .* got list"]),
    ),
    Case(
        "truncated_split_file",
        truncated_split_file,
        "fail",
        Raises(DatasetError, lambda c: [r"train\.json: invalid JSON"]),
    ),
    *[
        Case(
            f"missing_{key}_key",
            _drop_key(key),
            "fail",
            Raises(
                DatasetError,
                lambda c: [rf"annotations\.json: missing top-level key\(s\) \['{c['key']}'\]"],
            ),
        )
        for key in ("images", "annotations", "categories")
    ],
    Case(
        "bbox_null",
        _bbox_value(1, None),
        "fail",
        Raises(
            DatasetError,
            lambda c: [
                rf"annotations\.json: annotation id {c['id']} \(image id {c['image_id']}\): "
                r"'bbox' must be \[x, y, width, height\] numbers"
            ],
        ),
    ),
    Case(
        "image_id_not_an_integer",
        image_id_not_an_integer,
        "drop",
        Raises(
            DatasetError,
            lambda c: [r"annotations\.json: images\[2\]: 'id' must be an integer .*got \[3\]"],
        ),
    ),
    Case(
        "category_id_not_an_integer",
        category_id_not_an_integer,
        "fail",
        Raises(
            DatasetError,
            lambda c: [
                rf"annotations\.json: annotations\[4\] \(id {c['id']}\): 'category_id' must be "
                r"an integer .*got 'cross'"
            ],
        ),
    ),
    # --- empty
    Case(
        "empty_dataset",
        empty_dataset,
        "fail",
        Raises(
            V.DataValidationError,
            lambda c: [r"annotations\.json: the dataset is empty: 'images' is an empty list"],
        ),
    ),
    Case(
        "empty_dataset_drop",
        empty_dataset,
        "drop",
        Raises(V.DataValidationError, lambda c: [r"annotations\.json: the dataset is empty"]),
    ),
    Case(
        "no_annotations",
        no_annotations,
        "fail",
        Raises(
            V.DataValidationError,
            lambda c: [r"annotations\.json: 'annotations' is an empty list: none of the 6 images"],
        ),
    ),
    Case(
        "no_categories",
        no_categories,
        "drop",
        Raises(
            V.DataValidationError, lambda c: [r"annotations\.json: 'categories' is an empty list"]
        ),
    ),
    # --- image files
    Case(
        "corrupt_png",
        _write_bytes_of_image(3, lambda b: b"this is not a PNG" + b[100:]),
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.FILE_READABLE,
                "image",
                lambda c: (
                    rf"image id {c['id']}: \S*{_esc(c['file'])}: cannot read the image header"
                ),
            ),
        ),
    ),
    Case(
        "corrupt_png_drop",
        _write_bytes_of_image(3, lambda b: b"this is not a PNG" + b[100:]),
        "drop",
        Dropped("image", V.FILE_READABLE),
    ),
    Case(
        "truncated_png",
        _write_bytes_of_image(2, lambda b: b[: len(b) // 2]),
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.FILE_READABLE,
                "image",
                lambda c: (
                    rf"image id {c['id']}: \S*{_esc(c['file'])}: cannot decode image "
                    r"\(the file is truncated"
                ),
            ),
        ),
    ),
    Case(
        "truncated_png_drop",
        _write_bytes_of_image(2, lambda b: b[: len(b) // 2]),
        "drop",
        Dropped("image", V.FILE_READABLE),
    ),
    Case(
        "truncated_jpeg",
        truncated_jpeg,
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.FILE_READABLE,
                "image",
                lambda c: rf"image id {c['id']}: \S*{_esc(c['file'])}: .*truncated",
            ),
        ),
    ),
    Case(
        "missing_file",
        missing_file,
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.FILE_EXISTS,
                "image",
                lambda c: rf"image id {c['id']}: \S*{_esc(c['file'])}: image file not found",
            ),
        ),
    ),
    Case("missing_file_drop", missing_file, "drop", Dropped("image", V.FILE_EXISTS)),
    Case(
        "file_name_dotdot",
        _file_name("../outside.png"),
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.PATH_INSIDE,
                "image",
                lambda c: (
                    rf"image id {c['id']}: file_name '\.\./outside\.png' escapes the dataset "
                    r"directory"
                ),
            ),
        ),
    ),
    Case(
        "file_name_dotdot_drop",
        _file_name("images/../../outside.png"),
        "drop",
        Dropped("image", V.PATH_INSIDE),
    ),
    Case(
        "file_name_absolute",
        _file_name("/etc/passwd"),
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.PATH_INSIDE,
                "image",
                lambda c: rf"image id {c['id']}: file_name '/etc/passwd' is an absolute path",
            ),
        ),
    ),
    Case(
        "declared_size_differs",
        declared_size_differs,
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.DECLARED_SIZE,
                "image",
                lambda c: (
                    rf"image id {c['id']} \({_esc(c['file'])}\): declared {c['declared']}, "
                    r"the file is 64 x 64"
                ),
            ),
        ),
    ),
    Case(
        "declared_size_differs_drop",
        declared_size_differs,
        "drop",
        Dropped("image", V.DECLARED_SIZE),
    ),
    Case("rgba_png_alpha_dropped", rgba_png, "fail", Accepted(_rgba_read_as_rgb)),
    Case("png_16bit_scaled", png_16bit, "fail", Accepted(_16bit_scaled)),
    Case("float_tiff_accepted", float_tiff, "fail", Accepted(_float_tiff_accepted)),
    Case(
        "huge_image_refused",
        huge_image,
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.IMAGE_NOT_TOO_LARGE,
                "image",
                lambda c: (
                    rf"image id {c['id']}: \S*{_esc(c['file'])}: image of 10000 x 10000 pixels "
                    r"\(100\.0 megapixels\) exceeds validation\.max_image_pixels "
                    r"\(50\.0 megapixels\); it is refused without being decoded"
                ),
            ),
        ),
    ),
    Case("huge_image_drop", huge_image, "drop", Dropped("image", V.IMAGE_NOT_TOO_LARGE)),
    # --- boxes
    Case(
        "box_negative_width",
        _box(lambda b, i: b.__setitem__(2, -3)),
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.BOX_POSITIVE,
                "annotation",
                lambda c: (
                    rf"annotation id {c['id']} \(image id {c['image_id']}\): bbox \[[^\]]*, -3, "
                ),
            ),
        ),
    ),
    Case(
        "box_zero_height",
        _box(lambda b, i: b.__setitem__(3, 0)),
        "drop",
        Dropped("annotation", V.BOX_POSITIVE),
    ),
    Case(
        "box_nan",
        _box(lambda b, i: b.__setitem__(0, float("nan"))),
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.BOX_FINITE,
                "annotation",
                lambda c: rf"annotation id {c['id']} \(image id {c['image_id']}\): bbox \[nan, ",
            ),
        ),
    ),
    Case(
        "box_nan_drop",
        _box(lambda b, i: b.__setitem__(0, float("nan"))),
        "drop",
        Dropped("annotation", V.BOX_FINITE),
    ),
    Case(
        "box_infinite",
        _box(lambda b, i: b.__setitem__(2, float("inf"))),
        "drop",
        Dropped("annotation", V.BOX_FINITE),
    ),
    Case(
        "box_outside_image",
        _box(lambda b, i: b.__setitem__(0, i["width"] - b[2] + 5)),
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.BOX_INSIDE,
                "annotation",
                lambda c: (
                    rf"annotation id {c['id']} \(image id {c['image_id']}\): bbox .* "
                    r"in a 64 x 64 image"
                ),
            ),
        ),
    ),
    Case(
        "box_outside_image_drop",
        _box(lambda b, i: b.__setitem__(1, -4)),
        "drop",
        Dropped("annotation", V.BOX_INSIDE),
    ),
    # --- ids and categories
    Case(
        "unknown_category",
        unknown_category,
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.KNOWN_CATEGORY,
                "annotation",
                lambda c: rf"annotation id {c['id']}: category_id 99",
            ),
        ),
    ),
    Case(
        "unknown_category_drop", unknown_category, "drop", Dropped("annotation", V.KNOWN_CATEGORY)
    ),
    Case(
        "duplicate_annotation_id",
        duplicate_annotation_id,
        "fail",
        Raises(V.DataValidationError, _failed(V.UNIQUE_ANNOTATION_ID, "annotation")),
    ),
    Case(
        "duplicate_annotation_id_drop",
        duplicate_annotation_id,
        "drop",
        Dropped("annotation", V.UNIQUE_ANNOTATION_ID),
    ),
    Case(
        "duplicate_image_id",
        duplicate_image_id,
        "fail",
        Raises(V.DataValidationError, _failed(V.UNIQUE_IMAGE_ID, "image")),
    ),
    Case(
        "duplicate_image_id_drop", duplicate_image_id, "drop", Dropped("image", V.UNIQUE_IMAGE_ID)
    ),
    Case(
        "dangling_image_id",
        dangling_image_id,
        "fail",
        Raises(
            V.DataValidationError,
            _failed_with(
                V.ANNOTATION_IMAGE_EXISTS,
                "annotation",
                lambda c: rf"annotation id {c['id']}: image_id 4242",
            ),
        ),
    ),
    # --- splits and negatives
    Case(
        "class_missing_from_a_split",
        class_missing_from_a_split,
        "fail",
        Warns(
            lambda c: [
                rf"the '{c['split']}' split \(1 images\) has no object of class "
                rf"'{c['class']}' \(id {c['class_id']}\)"
            ]
        ),
    ),
    Case(
        "image_without_boxes_is_a_negative_example",
        image_without_boxes,
        "fail",
        Accepted(_negative_example),
    ),
]


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    return generate_sample_dataset(
        root / "ds",
        num_images=6,
        image_size=SIZE,
        seed=3,
        min_objects=3,
        max_objects=6,
        max_side=12,
        write_splits=True,
    )


def test_the_clean_dataset_goes_through(clean_dir):
    run = run_entry_points(clean_dir, "fail")
    assert run.dropped == {} and len(run.items) == 6


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, clean_dir, tmp_path, caplog):
    root = tmp_path / "ds"
    shutil.copytree(clean_dir, root)
    ctx = case.corrupt(root) or {}
    expect = case.expect

    if isinstance(expect, Raises):
        with pytest.raises(expect.exc) as excinfo:
            run_entry_points(root, case.policy)
        err = excinfo.value
        msg = str(err)
        for pattern in expect.patterns(ctx):
            assert re.search(pattern, msg, re.S), f"{pattern!r} not in:\n{msg}"
        # our message, raised by our code, with no library traceback chained to it
        assert isinstance(err, DatasetError)
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__), (
            repr(err.__context__)
        )
        assert Path(excinfo.traceback[-1].path).resolve().is_relative_to(PACKAGE_DIR)
        return

    with caplog.at_level(logging.WARNING):
        run = run_entry_points(root, case.policy)
    if isinstance(expect, Dropped):
        entries = run.dropped[f"dropped_{expect.kind}s"]
        ours = [d for d in entries if d["id"] == ctx["id"]]
        assert ours and all(expect.reason in d["reasons"] for d in ours), entries
        if expect.kind == "image":
            assert (
                ctx["id"] not in {img["id"] for img in run.coco.images}
                or expect.reason == V.UNIQUE_IMAGE_ID
            )
            assert ctx["id"] not in run.items
        assert V.validate_dataset(run.coco).success  # what is left is clean
    elif isinstance(expect, Warns):
        text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
        for pattern in expect.patterns(ctx):
            assert re.search(pattern, text), f"{pattern!r} not in the warnings:\n{text}"
    else:
        assert run.dropped == {}
        expect.check(run, ctx)


def test_a_huge_image_is_refused_from_its_header_without_decoding(clean_dir, tmp_path, monkeypatch):
    root = tmp_path / "ds"
    shutil.copytree(clean_dir, root)
    ctx = huge_image(root)

    def no_decoding(path):
        raise AssertionError(f"{path} was decoded")

    monkeypatch.setattr(coco_module, "_decode", no_decoding)
    path = root / ctx["file"]
    assert read_header(path) == (10_000, 10_000, 1)
    with pytest.raises(
        DatasetError, match=r"10000 x 10000 pixels .* refused without being decoded"
    ):
        read_image(path, max_pixels=50_000_000)
    table = V.images_table(
        CocoDataset.from_dir(root).subset([ctx["id"]]), max_image_pixels=50_000_000
    )
    assert table["pixels"].tolist() == [1e8] and table["readable"].isna().all()
    # the limit is a setting: a run allowed 100 megapixels reads the header, then decodes
    table = V.images_table(CocoDataset.from_dir(root).subset([ctx["id"]]), max_image_pixels=None)
    assert table["readable"].tolist() == [False] and "was decoded" in table["error"].iloc[0]


def test_an_image_beyond_pils_decompression_bomb_limit_is_a_clear_error(tmp_path):
    """With validation.max_image_pixels raised (or null), PIL's own guard still refuses images
    over twice its MAX_IMAGE_PIXELS: reported as an error of that file, not a library traceback."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    write_big_png(root / "images" / "big.png", 14_000, 14_000)  # 196 megapixels
    (root / "annotations.json").write_text(
        json.dumps(
            {
                "images": [
                    {"id": 1, "file_name": "images/big.png", "width": 14_000, "height": 14_000}
                ],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
                "categories": [{"id": 1, "name": "a"}],
            }
        )
    )
    with pytest.raises(
        DatasetError,
        match=r"big\.png: cannot decode image \(too large to decode safely: "
        r"Image size \(196000000 pixels\) exceeds limit",
    ):
        read_image(root / "images" / "big.png")
    outcome = V.validate_dataset(CocoDataset.from_dir(root), max_image_pixels=None)
    assert [c.name for c in outcome.failed] == [V.FILE_READABLE]
    assert re.search(
        r"image id 1: \S*big\.png: cannot read the image header \(too large to decode safely",
        outcome.summary(),
    )
