"""great-expectations validation: every check catches its fault and names the offending ids;
policy 'fail' stops with the summary, policy 'drop' removes exactly the offending items."""

import copy
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from smallobj_pipeline.detection.data import validation as V
from smallobj_pipeline.detection.data.coco import CocoDataset
from smallobj_pipeline.detection.data.sample import generate_sample_dataset
from smallobj_pipeline.detection.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    generate_sample_dataset(
        root,
        num_images=6,
        image_size=80,
        seed=3,
        min_objects=3,
        max_objects=6,
        max_side=16,
        write_splits=True,
    )
    return root


@pytest.fixture
def coco(clean_dir, tmp_path):
    """A private copy of the clean dataset (files and annotations may be corrupted freely)."""
    root = tmp_path / "ds"
    shutil.copytree(clean_dir, root)
    return CocoDataset.from_dir(root)


def _rebuild(coco):
    """Fresh object after in-place edits (cached lookups would be stale)."""
    return CocoDataset(
        coco.root, coco.images, coco.annotations, coco.categories, coco.splits, coco.info
    )


def _summary_line(outcome, name):
    lines = [ln for ln in outcome.summary().splitlines() if ln.startswith(f"- {name}:")]
    assert len(lines) == 1, outcome.summary()
    return lines[0]


def _listed(line, kind):
    m = re.search(rf"{kind} ids \[([^\]]*)\]", line)
    return [] if m is None else [s.strip() for s in m.group(1).split(",")]


def test_clean_dataset_passes_every_check(coco):
    outcome = V.validate_dataset(coco)
    assert outcome.success, outcome.summary()
    assert len(outcome.checks) == 20 and all(c.success for c in outcome.checks)
    assert "all 20 checks passed" in outcome.summary()
    same, dropped = V.apply_policy(coco, outcome, "fail")
    assert same is coco and dropped == {}


# ------------------------------------------------------------------------------ one fault each
def _bad_box_outside(c):
    a = c.annotations[0]
    img = c.images_by_id[a["image_id"]]
    a["bbox"][0] = img["width"] - a["bbox"][2] + 2  # 2 px past the right edge
    return "annotation", a["id"]


def _negative_width(c):
    c.annotations[1]["bbox"][2] = -3
    return "annotation", c.annotations[1]["id"]


def _zero_height(c):
    c.annotations[2]["bbox"][3] = 0
    return "annotation", c.annotations[2]["id"]


def _nan_box(c):
    c.annotations[3]["bbox"][1] = float("nan")
    return "annotation", c.annotations[3]["id"]


def _unknown_category(c):
    c.annotations[4]["category_id"] = 99
    return "annotation", c.annotations[4]["id"]


def _duplicate_annotation_id(c):
    c.annotations[6]["id"] = c.annotations[5]["id"]
    return "annotation", c.annotations[5]["id"]


def _dangling_image_id(c):
    c.annotations[7]["image_id"] = 4242
    return "annotation", c.annotations[7]["id"]


def _duplicate_image_id(c):
    old, new = c.images[4]["id"], c.images[3]["id"]
    c.images[4]["id"] = new
    for a in c.annotations:  # its annotations follow, so none is left dangling
        if a["image_id"] == old:
            a["image_id"] = new
    return "image", new


def _escaping_file_name(c):
    c.images[1]["file_name"] = "../outside.png"
    return "image", c.images[1]["id"]


def _missing_file(c):
    c.image_path(c.images[2]).unlink()
    return "image", c.images[2]["id"]


def _unreadable_file(c):
    c.image_path(c.images[3]).write_bytes(b"this is not a png")
    return "image", c.images[3]["id"]


def _wrong_declared_size(c):
    c.images[4]["width"] += 10  # larger, so the boxes still fit the declared size
    return "image", c.images[4]["id"]


def _wrong_channels(c):
    path = c.image_path(c.images[5])
    Image.fromarray(np.zeros((80, 80, 3), dtype=np.uint8)).save(path)
    return "image", c.images[5]["id"]


FAULTS = [
    (_bad_box_outside, V.BOX_INSIDE, 1),
    (_negative_width, V.BOX_POSITIVE, 1),
    (_zero_height, V.BOX_POSITIVE, 1),
    (_nan_box, V.BOX_FINITE, 1),
    (_unknown_category, V.KNOWN_CATEGORY, 1),
    (_duplicate_annotation_id, V.UNIQUE_ANNOTATION_ID, 2),
    (_dangling_image_id, V.ANNOTATION_IMAGE_EXISTS, 1),
    (_duplicate_image_id, V.UNIQUE_IMAGE_ID, 2),
    (_escaping_file_name, V.PATH_INSIDE, 1),
    (_missing_file, V.FILE_EXISTS, 1),
    (_unreadable_file, V.FILE_READABLE, 1),
    (_wrong_declared_size, V.DECLARED_SIZE, 1),
    (_wrong_channels, V.ALLOWED_CHANNELS, 1),
]


@pytest.mark.parametrize(
    ("corrupt", "check", "count"), FAULTS, ids=[f[0].__name__.strip("_") for f in FAULTS]
)
def test_each_check_catches_its_fault_and_names_the_offender(coco, corrupt, check, count):
    kind, bad_id = corrupt(coco)
    coco = _rebuild(coco)
    allowed = (1,) if check == V.ALLOWED_CHANNELS else (1, 3)
    outcome = V.validate_dataset(coco, allowed_channels=allowed)

    assert not outcome.success
    assert [c.name for c in outcome.failed] == [check], outcome.summary()  # only this check fails
    result = outcome.check(check)
    assert result.failing_count == count
    ids = result.annotation_ids if kind == "annotation" else result.image_ids
    assert bad_id in ids

    line = _summary_line(outcome, check)
    assert f"{count} failing" in line
    assert str(bad_id) in _listed(line, kind)
    json.dumps(outcome.to_dict(), allow_nan=False)  # the report is strict JSON even with NaN boxes

    with pytest.raises(V.DataValidationError, match=re.escape(check)):
        V.apply_policy(coco, outcome, "fail")


def test_box_tolerance_is_configurable(coco):
    a = coco.annotations[0]
    img = coco.images_by_id[a["image_id"]]
    a["bbox"][0] = img["width"] - a["bbox"][2] + 0.4  # 0.4 px past the edge: exporter rounding
    assert V.validate_dataset(coco).success
    a["bbox"][0] += 0.3  # 0.7 px past
    assert not V.validate_dataset(coco).check(V.BOX_INSIDE).success
    assert V.validate_dataset(coco, bbox_tolerance=1.0).success


def test_report_is_json_with_the_great_expectations_results(coco):
    _negative_width(coco)
    report = V.validate_dataset(_rebuild(coco)).to_dict()
    text = json.dumps(report, allow_nan=False)
    assert report["success"] is False and report["failed_checks"] == [V.BOX_POSITIVE]
    gx_ann = report["great_expectations"]["annotations"]
    assert gx_ann["success"] is False
    assert any(
        r["expectation_config"]["meta"]["check"] == V.BOX_POSITIVE and not r["success"]
        for r in gx_ann["results"]
    )
    assert report["great_expectations"]["images"]["success"] is True
    assert "expect_column_values_to_be_between" in text


def test_report_says_what_computes_each_check(coco):
    report = V.validate_dataset(coco).to_dict()
    by = {c["name"]: c["computed_by"] for c in report["checks"]}
    python = {V.PATH_INSIDE, V.FILE_EXISTS, V.FILE_READABLE}  # file-system facts, plain code
    assert {n for n, b in by.items() if b == "python"} == python
    assert {n for n, b in by.items() if b == "great_expectations"} == set(by) - python
    # every great-expectations check is made of expectations tagged with its name
    tagged = {
        r["expectation_config"]["meta"]["check"]
        for table in report["great_expectations"].values()
        for r in table["results"]
    }
    assert tagged == set(by) - python


@pytest.mark.parametrize("scale", [1, 10**6], ids=["ids_with_gaps", "sparse_ids"])
def test_annotation_image_ids_are_checked_against_every_image_id(coco, scale):
    """Integer ids with a few gaps take the compact form (between the smallest and the largest,
    not a missing one); sparse ids the set itself. Either way only a dangling id fails."""
    new_id = {img["id"]: img["id"] * scale for img in coco.images}
    new_id[coco.images[2]["id"]] = 100 * scale  # a gap where image 3 was, and up to 100
    for img in coco.images:
        img["id"] = new_id[img["id"]]
    for a in coco.annotations:
        a["image_id"] = new_id[a["image_id"]]
    coco.splits = {k: [new_id[i] for i in v] for k, v in coco.splits.items()}
    assert V.validate_dataset(_rebuild(coco)).success
    dangling = coco.annotations[1]
    dangling["image_id"] = 3 * scale  # inside the range of ids, not an image's
    outcome = V.validate_dataset(_rebuild(coco))
    assert [c.name for c in outcome.failed] == [V.ANNOTATION_IMAGE_EXISTS]
    check = outcome.check(V.ANNOTATION_IMAGE_EXISTS)
    assert check.annotation_ids == [dangling["id"]] and check.image_ids == [3 * scale]
    types = {
        r["expectation_config"]["type"]
        for r in outcome.to_dict()["great_expectations"]["annotations"]["results"]
        if r["expectation_config"]["meta"]["check"] == V.ANNOTATION_IMAGE_EXISTS
    }
    compact = {"expect_column_values_to_be_between", "expect_column_values_to_not_be_in_set"}
    assert types == (compact if scale == 1 else {"expect_column_values_to_be_in_set"})


def test_summary_lists_at_most_ten_ids_and_marks_more(coco):
    for a in coco.annotations[:12]:
        a["category_id"] = 77
    outcome = V.validate_dataset(_rebuild(coco))
    line = _summary_line(outcome, V.KNOWN_CATEGORY)
    assert "12 failing" in line
    listed = _listed(line, "annotation")
    assert listed[:10] == [str(a["id"]) for a in coco.annotations[:10]] and listed[10] == "..."


# ------------------------------------------------------------------------------ policies
def test_drop_policy_removes_exactly_the_offenders_and_reports_them(coco):
    anns = coco.annotations
    img_missing = coco.images[2]
    coco.image_path(img_missing).unlink()
    img_dup_a, img_dup_b = coco.images[4], coco.images[5]
    old_b_id = img_dup_b["id"]
    img_dup_b["id"] = img_dup_a["id"]  # its annotations now point at no image: dangling
    anns_of_dropped_images = [
        a["id"] for a in anns if a["image_id"] in (img_missing["id"], img_dup_a["id"])
    ]
    anns_of_old_b = [a["id"] for a in anns if a["image_id"] == old_b_id]

    kept_images = [img["id"] for img in coco.images[:2] + coco.images[3:4]]
    candidates = [a for a in anns if a["image_id"] in kept_images]
    bad_box, bad_cat, dangling, dup_first, dup_second = candidates[:5]
    bad_box["bbox"][2] = -1
    bad_cat["category_id"] = 99
    dangling["image_id"] = 5555
    dup_second["id"] = dup_first["id"]
    splits_before = copy.deepcopy(coco.splits)

    coco = _rebuild(coco)
    outcome = V.validate_dataset(coco)
    clean, report = V.apply_policy(coco, outcome, "drop")

    # the missing image and both images sharing an id
    assert [d["id"] for d in report["dropped_images"]] == [
        img_missing["id"],
        img_dup_a["id"],
        img_dup_a["id"],
    ]
    dropped_img = {d["id"]: d for d in report["dropped_images"]}
    assert dropped_img[img_dup_a["id"]]["reasons"] == [V.UNIQUE_IMAGE_ID]
    assert V.FILE_EXISTS in dropped_img[img_missing["id"]]["reasons"]
    assert dropped_img[img_missing["id"]]["file_name"] == img_missing["file_name"]

    dropped_ann = [(d["id"], tuple(d["reasons"])) for d in report["dropped_annotations"]]
    expected = {
        bad_box["id"]: V.BOX_POSITIVE,
        bad_cat["id"]: V.KNOWN_CATEGORY,
        dangling["id"]: V.ANNOTATION_IMAGE_EXISTS,
    }
    for ann_id, reason in expected.items():
        assert (ann_id, (reason,)) in dropped_ann
    dup_entries = [d for d in report["dropped_annotations"] if d["id"] == dup_first["id"]]
    assert len(dup_entries) == 1 and dup_entries[0]["reasons"] == [V.UNIQUE_ANNOTATION_ID]
    assert {d["id"] for d in report["dropped_annotations"]} == (
        set(expected) | {dup_first["id"]} | set(anns_of_dropped_images) | set(anns_of_old_b)
    )

    # the cleaned dataset: the first of the duplicated annotations stays, the rest is untouched
    assert [img["id"] for img in clean.images] == kept_images
    removed = {id(bad_box), id(bad_cat), id(dangling), id(dup_second)}
    assert [a for a in clean.annotations] == [
        a for a in coco.annotations if id(a) not in removed and a["image_id"] in kept_images
    ]
    assert dup_first in clean.annotations
    assert clean.splits == {k: [i for i in v if i in kept_images] for k, v in splits_before.items()}
    assert V.validate_dataset(clean).success


def test_drop_on_a_clean_dataset_changes_nothing(coco):
    outcome = V.validate_dataset(coco)
    same, report = V.apply_policy(coco, outcome, "drop")
    assert same is coco and report == {}


def test_unknown_policy_is_a_config_error_naming_the_choices(coco):
    outcome = V.validate_dataset(coco)
    with pytest.raises(ConfigError, match=r"'fail', 'drop'.*'warn'"):
        V.apply_policy(coco, outcome, "warn")


def test_data_validation_error_is_a_dataset_error():
    assert issubclass(V.DataValidationError, DatasetError)
