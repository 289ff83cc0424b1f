"""DataReport.summary, what the console prints about the data: it names the skipped files (bad images
first, with their reasons), not only their counts."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tl_hub.data import DataReport, load_data
from tl_hub.data.report import SKIPPED_ELSEWHERE, SUMMARY_SKIPPED


def _folder_with_bad_images(root: Path, bad: int) -> Path:
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(700):
            Image.new("L", (4, 4), i % 250).save(root / label / f"{i}.png")
    for i in range(bad):
        (root / "cat" / f"broken{i:02d}.jpg").write_bytes(b"not a jpeg" * 3)
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def test_the_summary_names_the_first_skipped_files_and_counts_the_rest(tmp_path):
    root = _folder_with_bad_images(tmp_path / "photos", bad=12)  # 12 of 1412 images: under max_bad_fraction
    bundle = load_data(str(root))
    lines = bundle.report.summary().splitlines()
    start = lines.index("  skipped 13: 12 not an image Pillow can identify, 1 hidden file")
    reason = "not an image Pillow can identify (corrupt, or not an image file)"
    assert lines[start + 1:start + 12] == [
        *[f"    cat/broken{i:02d}.jpg: {reason}" for i in range(10)],  # bad images first, by name
        "    ... and 3 more (all listed in run_info.json; the model card lists the first 20)",
    ]
    assert lines[-1] == "  note: skipped 12 bad image(s) (0.85%)"
    assert len(bundle.report.skipped) == 13 and bundle.report.accounted


def test_a_few_skipped_files_are_all_named():
    report = DataReport(source="/data/photos", source_type="imagefolder", labels=["cat", "dog"], skipped=[
        {"id": "/data/photos/.DS_Store", "reason": "hidden file", "kind": "ignored"},
        {"id": "/data/photos/cat/x.png", "reason": "zero-byte file", "kind": "bad_image"},
        {"id": "/elsewhere/y.png", "reason": "no label", "kind": "no_label"},
    ])
    assert report.summary().splitlines()[3:] == [
        "  skipped 3: 1 hidden file, 1 zero-byte file, 1 no label",
        "    cat/x.png: zero-byte file",
        "    /elsewhere/y.png: no label",
        "    .DS_Store: hidden file",
    ]


def test_what_the_summary_says_about_the_model_card_is_true():
    """The card's table of skipped files (tl_hub.card) lists the first 20, as SKIPPED_ELSEWHERE says."""
    from tl_hub.card import _skipped

    skipped = [{"id": f"/d/{i}.png", "reason": "zero-byte file", "kind": "bad_image"} for i in range(25)]
    count, rows, _ = _skipped({"skipped": skipped})
    assert count == 25 and len(rows) == 20 and "the model card lists the first 20" in SKIPPED_ELSEWHERE
    assert SUMMARY_SKIPPED == 10
