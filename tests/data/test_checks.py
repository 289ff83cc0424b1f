"""The decode-once image check of `load_data` (tl_hub.data.checks): a progress bar over large sets."""

from __future__ import annotations

from helpers.images import write_image_folder
from tl_hub.data import load_data


def test_checking_many_images_shows_a_progress_bar(tmp_path, capsys):
    small = write_image_folder(tmp_path / "small", ["a", "b"], per_label=5, seed=0)
    load_data(str(small), eval_fraction=0.2)
    assert "checking images" not in capsys.readouterr().err  # one chunk: over in a blink, no bar
    large = write_image_folder(tmp_path / "large", ["a", "b"], per_label=330, seed=0)
    data = load_data(str(large), eval_fraction=0.2)
    assert "checking images" in capsys.readouterr().err
    assert len(data.train) + len(data.eval) == 660


_LOAD_TWICE = r"""
import json, sys
from tl_hub.data import load_data
data = load_data(sys.argv[1], eval_fraction=0.25, on_bad_image="skip", max_bad_fraction=0.5)
print("RESULT" + json.dumps({"train": len(data.train), "eval": len(data.eval), "bad": data.report.bad_images,
                             "skipped": sorted(s["id"] for s in data.report.skipped)}))
"""


def _load_in_new_process(folder, cache):
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "TL_HUB_CACHE": str(cache), "TL_HUB_VERBOSITY": "info"}
    proc = subprocess.run([sys.executable, "-c", _LOAD_TWICE, str(folder)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):]), proc.stdout + proc.stderr


def test_a_second_run_on_unchanged_files_decodes_nothing_to_check_them(tmp_path, monkeypatch):
    import tl_hub.data.checks as checks

    folder = write_image_folder(tmp_path / "imgs", ["a", "b"], per_label=12, seed=0)
    (folder / "a" / "broken.png").write_bytes(b"not a png")
    first, _ = _load_in_new_process(folder, tmp_path / "cache")
    assert first["bad"] == 1 and any("broken.png" in s for s in first["skipped"])
    assert list((tmp_path / "cache" / "checks").glob("*.u8"))

    decoded: list[object] = []
    real = checks.check_image
    monkeypatch.setattr(checks, "check_image", lambda value, where=None: decoded.append(where) or real(value, where=where))
    monkeypatch.setenv("TL_HUB_CACHE", str(tmp_path / "cache"))
    again = load_data(str(folder), eval_fraction=0.25, on_bad_image="skip", max_bad_fraction=0.5)
    assert decoded == []  # every answer came from the first run's record
    assert (len(again.train), len(again.eval), again.report.bad_images) == (first["train"], first["eval"], 1)
    assert sorted(s["id"] for s in again.report.skipped) == first["skipped"]  # the bad file is still reported
    assert again.report.images_remembered == again.report.images_checked == len(again.train) + len(again.eval) + 1
    assert f"images checked: {again.report.images_checked} ({again.report.images_checked} known from an earlier run" \
        in again.report.summary()

    (folder / "b" / "12.png").unlink()  # the files changed: a new record, every image checked again
    (folder / "b" / "new.png").write_bytes((folder / "b" / "13.png").read_bytes())
    decoded.clear()
    changed = load_data(str(folder), eval_fraction=0.25, on_bad_image="skip", max_bad_fraction=0.5)
    assert len(decoded) == len(changed.train) + len(changed.eval) + 1
    assert changed.report.images_remembered == 0 and "known from an earlier run" not in changed.report.summary()


def test_the_check_bar_can_be_turned_off(tmp_path, capsys):
    large = write_image_folder(tmp_path / "large", ["a", "b"], per_label=330, seed=1)
    load_data(str(large), eval_fraction=0.2, progress=False)
    assert "checking images" not in capsys.readouterr().err
