"""`DataReport`: what `load_data` found, decided and skipped, for the console, run_info.json and the card.

Example:
    >>> report = DataReport(source="photos/", source_type="imagefolder", labels=["cat", "dog"])
    >>> report.accounted, report.to_dict()["bad_fraction"]
    (True, 0.0)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DataReport", "SUMMARY_SKIPPED"]

#: how many skipped files `DataReport.summary` names (bad images first); the rest are counted
SUMMARY_SKIPPED = 10
#: where the others are listed (the model card's table shows the first 20: tl_hub/card.py `_skipped`)
SKIPPED_ELSEWHERE = "all listed in run_info.json; the model card lists the first 20"
_KIND_ORDER = {"bad_image": 0, "no_label": 1, "ignored": 2}


@dataclass
class DataReport:
    """Everything `load_data` found, decided and skipped; ``to_dict()`` goes into run_info.json.

    ``entries_found = used_train + used_eval + used_test + not_selected + skipped`` always holds (see
    `accounted`): every file or row the source offered is in exactly one bucket, and every skipped
    one is listed in ``skipped`` with its reason.

    Example:
        >>> r = DataReport(source="x", source_type="in-memory", labels=["a", "b"])
        >>> r.to_dict()["labels"]
        ['a', 'b']
    """

    source: str
    source_type: str
    labels: list[str]
    image_column: str | None = None
    label_column: str | None = None
    train_split: str = "train"
    eval_split: str | None = None
    eval_from: str = ""
    test_split: str | None = None  # the held-out test split (evaluated once after training), or None
    test_from: str = ""
    selects_on_test: bool = False  # eval_split named a test split: selection and the reported numbers share it
    sizes: dict[str, int] = field(default_factory=dict)
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    entries_found: int = 0
    used_train: int = 0
    used_eval: int = 0
    used_test: int = 0
    not_selected: int = 0  # subsampling, and the images of labels left out by `labels`
    labels_left_out: dict[str, int] = field(default_factory=dict)  # label not in `labels` -> images left out
    skipped: list[dict[str, str]] = field(default_factory=list)
    images_checked: int = 0
    images_remembered: int = 0  # of images_checked: outcomes an earlier run's check left (not decoded this time)
    images_pending: int = 0  # images whose check is the image cache's decode, still to come (`settle_image_checks`)
    bad_images: int = 0
    singleton_labels: list[str] = field(default_factory=list)
    unused_splits: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def accounted(self) -> bool:
        """True when every found entry is used, not selected, or skipped with a reason."""
        return self.entries_found == (self.used_train + self.used_eval + self.used_test + self.not_selected
                                      + len(self.skipped))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict.

        Example:
            >>> import json
            >>> json.dumps(DataReport(source="x", source_type="csv", labels=[]).to_dict())[:14]
            '{"source": "x"'
        """
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["bad_fraction"] = self.bad_images / self.images_checked if self.images_checked else 0.0
        out["accounted"] = self.accounted
        return out

    def summary(self) -> str:
        """A few human-readable lines (printed by the CLI): sizes, where every entry went, the skipped files
        by name (the first `SUMMARY_SKIPPED`, bad images first, with their reasons) and the notes.

        Example:
            >>> print(DataReport(source="x", source_type="csv", labels=["a"]).summary().splitlines()[0])
            data: x (csv), 1 labels
        """
        lines = [f"data: {self.source} ({self.source_type}), {len(self.labels)} labels"]
        lines.append(
            f"  train: {self.sizes.get('train', 0)} ({self.train_split}); eval: {self.sizes.get('eval', 0)} "
            f"({self.eval_from})"
        )
        if self.test_split:
            lines.append(f"  test: {self.sizes.get('test', 0)} ({self.test_from})")
        test = f"{self.used_test} test + " if self.test_split else ""
        lines.append(
            f"  entries found: {self.entries_found} = {self.used_train} train + {self.used_eval} eval + {test}"
            f"{self.not_selected} not selected + {len(self.skipped)} skipped"
        )
        if self.unused_splits:
            lines.append("  splits not used: " + ", ".join(f"{k} ({n})" for k, n in self.unused_splits.items()))
        if self.images_pending:
            lines.append(f"  images to check: {self.images_pending}, as the image cache decodes them (no separate pass)")
        if self.images_checked:
            known = (f" ({self.images_remembered} known from an earlier run, not decoded again)"
                     if self.images_remembered else "")
            lines.append(f"  images checked: {self.images_checked}{known}, bad: {self.bad_images}")
        lines.extend(self._skipped_lines())
        if self.singleton_labels:
            lines.append(f"  labels with a single example (kept in train only): {self.singleton_labels}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def _skipped_lines(self) -> list[str]:
        if not self.skipped:
            return []
        reasons = Counter(item["reason"].split(" (")[0] for item in self.skipped)
        lines = [f"  skipped {len(self.skipped)}: " + ", ".join(f"{n} {reason}" for reason, n in reasons.most_common(8))
                 + (", ..." if len(reasons) > 8 else "")]
        first = sorted(self.skipped, key=lambda item: (_KIND_ORDER.get(item.get("kind", ""), len(_KIND_ORDER)),
                                                        str(item["id"])))
        prefix = self.source.rstrip("/\\") + "/"
        for item in first[:SUMMARY_SKIPPED]:
            ident = str(item["id"])
            lines.append(f"    {ident[len(prefix):] if ident.startswith(prefix) else ident}: {item['reason']}")
        if len(self.skipped) > SUMMARY_SKIPPED:
            lines.append(f"    ... and {len(self.skipped) - SUMMARY_SKIPPED} more ({SKIPPED_ELSEWHERE})")
        return lines
