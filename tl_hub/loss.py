"""The training and evaluation loss: one rule for the loop's backward pass and for `eval_loss`.

`LossSpec` says which loss a run uses; `compute_loss(spec, logits, labels)` computes it. The loop calls
only `compute_loss`, so a new kind of loss (class weights, label smoothing, multi-label BCE, soft targets
from mixup) is a change here, not in the loop.

Example:
    >>> import torch
    >>> spec = LossSpec()
    >>> round(float(compute_loss(spec, torch.tensor([[2.0, 0.0]]), torch.tensor([0]))), 4)
    0.1269
    >>> multi = LossSpec(problem_type="multi_label_classification")  # BCE on float multi-hot labels
    >>> round(float(compute_loss(multi, torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]))), 4)
    0.41
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tl_hub.errors import ConfigError


@dataclass(frozen=True)
class LossSpec:
    """Which loss a run trains with.

    Example:
        >>> LossSpec().problem_type
        'single_label_classification'
    """

    problem_type: str = "single_label_classification"
    class_weights: tuple[float, ...] | None = None  # one weight per label id, or None (tl_hub.imbalance)
    label_smoothing: float = 0.0  # training only: the share of each target spread evenly over the labels

    def __post_init__(self) -> None:
        if self.class_weights is not None and self.problem_type != "single_label_classification":
            raise ConfigError(f"class_weights: set for a {self.problem_type} run; per-label weights of the "
                              "single-label loss do not apply there. Set class_weights: none")
        if self.class_weights is not None and not all(w > 0 for w in self.class_weights):
            raise ConfigError(f"class_weights: got {list(self.class_weights)}; every weight must be positive")

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the checkpoint."""
        out = {"problem_type": self.problem_type, "class_weights": list(self.class_weights or [])}
        return {**out, "label_smoothing": self.label_smoothing} if self.label_smoothing else out


def compute_loss(spec: LossSpec, logits: torch.Tensor, labels: torch.Tensor, *, training: bool = False) -> torch.Tensor:
    """The mean loss of a batch, in float32 whatever the logits' dtype.

    `labels` are label ids, or (mixup/cutmix, `tl_hub.regularisers.mix_batch`) one row of label
    probabilities per image. `label_smoothing` applies only when `training` (the loop's backward pass):
    `eval_loss` stays the plain cross-entropy, comparable between runs with and without smoothing.

    Example:
        >>> import torch
        >>> compute_loss(LossSpec(), torch.zeros(2, 3), torch.tensor([0, 1])).shape
        torch.Size([])
        >>> smooth, logits = LossSpec(label_smoothing=0.1), torch.tensor([[2.0, 0.0]])
        >>> round(float(compute_loss(smooth, logits, torch.tensor([0]), training=True)), 4)
        0.2269
        >>> round(float(compute_loss(smooth, logits, torch.tensor([[1.0, 0.0]]))), 4)
        0.1269
    """
    logits = logits.float()
    if spec.problem_type == "multi_label_classification":  # labels: float multi-hot [N, K]
        targets = labels.float()
        if training and spec.label_smoothing:  # each 0/1 target moves label_smoothing/2 towards the other
            targets = targets * (1.0 - spec.label_smoothing) + 0.5 * spec.label_smoothing
        return F.binary_cross_entropy_with_logits(logits, targets)
    weight = None
    if spec.class_weights is not None:
        weight = torch.tensor(spec.class_weights, dtype=torch.float32, device=logits.device)
    smoothing = spec.label_smoothing if training else 0.0
    if labels.is_floating_point():  # soft targets (mixup/cutmix): probabilities per label
        labels = labels.float()
    return F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing)
