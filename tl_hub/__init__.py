"""tl_hub: transfer learning for image classification on the Hugging Face Hub.

Load a pretrained vision backbone with a new head for your labels, let tl_hub pick how much of it to
re-train from the size of your data, train through Accelerate on any hardware, and push a Hub-ready
checkpoint with a rich model card.

Example:
    >>> import tl_hub
    >>> model = tl_hub.load_backbone("bundled:efficientnet_lite0", ["cat", "dog"])
    >>> policy = tl_hub.choose_policy(num_examples=200, num_labels=2)
    >>> summary = tl_hub.apply_policy(model, policy)

The public names are imported lazily, so `import tl_hub` (and `tl-hub --help`) stays fast.
"""

from __future__ import annotations

from tl_hub.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "TlHubError": "tl_hub.errors",
    "load_backbone": "tl_hub.backbone",
    "load_image_processor": "tl_hub.backbone",
    "resolve_source": "tl_hub.backbone",
    "head_parameter_names": "tl_hub.depth",
    "depth_map": "tl_hub.depth",
    "FreezePolicy": "tl_hub.policy",
    "PolicySummary": "tl_hub.freezing",
    "choose_policy": "tl_hub.policy",
    "apply_policy": "tl_hub.freezing",
    "param_groups": "tl_hub.freezing",
    "load_data": "tl_hub.data",
    "DataBundle": "tl_hub.data",
    "DataReport": "tl_hub.data",
    "ImageSpec": "tl_hub.data.transforms",
    "image_spec": "tl_hub.data.transforms",
    "export_processor": "tl_hub.data.transforms",
    "save_processor": "tl_hub.data.transforms",
    "ImageClassificationDataset": "tl_hub.data.dataset",
    "to_rgb": "tl_hub.data.images",
    "RecipeConfig": "tl_hub.config",
    "compute_metrics": "tl_hub.metrics",
    "finetune": "tl_hub.finetuning",
    "FinetuneResult": "tl_hub.finetuning",
    "push_to_hub": "tl_hub.hub",
    "load": "tl_hub.hub",
    "predict": "tl_hub.hub",
    "write_model_card": "tl_hub.card",
    "evaluate_model": "tl_hub.evaluation",
    "search": "tl_hub.search_run",
    "SearchResult": "tl_hub.search_run",
    "EvaluationResult": "tl_hub.evaluation",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
