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
