"""Multi-label targets: which problem a run is, label lists from cells, and multi-hot rows.

A multi-label dataset gives each image a *list* of labels: a Hub ``Sequence(ClassLabel)`` (or list of
strings/ints) column, a JSONL list (``"labels": ["cat", "dog"]``), or a CSV cell split by the recipe's
``label_separator`` (``cat|dog`` with ``label_separator: "|"``). `load_data` then returns splits whose
``label`` column is ``Sequence(ClassLabel(names))``, and the torch datasets turn each row into a float
multi-hot vector (what the BCE loss of `tl_hub.loss` wants).

Example:
    >>> split_cell(" cat | dog ", "|")
    ['cat', 'dog']
    >>> multi_hot([[0, 2], [1]], 3).tolist()
    [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tl_hub.errors import ConfigError

__all__ = [
    "AUTO", "MULTI_LABEL", "PROBLEM_TYPES", "SINGLE_LABEL", "check_problem_type", "is_list_label",
    "is_multi_label_feature", "label_names_of", "multi_hot", "split_cell",
]

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
AUTO = "auto"
#: the values of the recipe key `problem_type` (transformers' names, plus auto: lists in the label column)
PROBLEM_TYPES = (AUTO, SINGLE_LABEL, MULTI_LABEL)


def check_problem_type(value: Any) -> str:
    """The problem type, or a ConfigError naming the key, the value and the choices.

    Example:
        >>> check_problem_type("multi_label_classification")
        'multi_label_classification'
    """
    if value not in PROBLEM_TYPES:
        raise ConfigError(
            f"problem_type: got {value!r}; choose one of {', '.join(PROBLEM_TYPES)} (auto: multi-label when the "
            "label column holds lists, single-label otherwise)"
        )
    return str(value)


def is_list_label(value: Any) -> bool:
    """True for a label that is a list of labels (list, tuple or numpy array).

    Example:
        >>> is_list_label(["a"]), is_list_label("a")
        (True, False)
    """
    return isinstance(value, (list, tuple, np.ndarray))


def check_label_separator(value: Any) -> str | None:
    r"""The `label_separator` to split CSV/TSV label cells with, or a ConfigError naming the field. A literal
    backslash-t (how a tab is usually typed on a command line) means a tab; any other non-empty string, spaces
    included, is used as given.

    Example:
        >>> check_label_separator("\\t"), check_label_separator(" "), check_label_separator(None)
        ('\t', ' ', None)
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"label_separator: got {value!r}; give the character that separates the labels of a multi-label "
            "CSV cell, e.g. '|', ';', ' ' or '\\t' (null when each cell holds one label)"
        )
    return "\t" if value == "\\t" else value


def split_cell(text: str, separator: str) -> list[str]:
    """A CSV label cell split into label names (stripped, empty parts dropped).

    Example:
        >>> split_cell("a;;b", ";")
        ['a', 'b']
    """
    return [part.strip() for part in str(text).split(separator) if part.strip()]


def is_multi_label_feature(feature: Any) -> bool:
    """True when a `datasets` label feature holds lists of class ids (``Sequence``/``List`` of ClassLabel).

    Example:
        >>> from datasets import ClassLabel, Sequence
        >>> is_multi_label_feature(Sequence(ClassLabel(names=["a", "b"]))), is_multi_label_feature(ClassLabel(names=["a"]))
        (True, False)
    """
    from datasets import ClassLabel

    inner = getattr(feature, "feature", None)
    return isinstance(inner, ClassLabel)


def label_names_of(feature: Any) -> list[str]:
    """The class names of a ClassLabel or a ``Sequence(ClassLabel)`` feature.

    Example:
        >>> from datasets import ClassLabel, Sequence
        >>> label_names_of(Sequence(ClassLabel(names=["a", "b"])))
        ['a', 'b']
    """
    inner = feature.feature if is_multi_label_feature(feature) else feature
    return list(inner.names)


def multi_hot(rows: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    """Lists of class ids -> a float32 ``[N, num_labels]`` matrix of 0/1.

    Example:
        >>> multi_hot([[1]], 2).dtype
        dtype('float32')
    """
    out = np.zeros((len(rows), num_labels), dtype=np.float32)
    for i, ids in enumerate(rows):
        if ids:
            out[i, np.asarray(list(ids), dtype=np.int64)] = 1.0
    return out
