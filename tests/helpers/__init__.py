"""Shared code for the tests (not collected by pytest: no module here is named test_*).

- `helpers.hub_server`: a local Hugging Face Hub-compatible HTTP server with fault injection (the
  session's `hub` fixture in tests/conftest.py runs one).
- `helpers.xet_cas`: the Xet CAS service the local Hub serves under /xet-cas (xorb / shard uploads,
  file reconstructions), so the real hf_xet client uploads and downloads through it.
- `helpers.tiny_models`: tiny random image-classification checkpoints of many architectures, saved
  like Hub checkpoints (the `tiny` fixture builds them once per session).
- `helpers.outputs`: realistic tl_hub output folders for the card / Hub tests, without the training code.
- `helpers.images`: synthetic labelled colour images, in memory or written as an image folder.
- `helpers.ports`: `free_port()`, a free TCP port on 127.0.0.1.
- `helpers.processors`: `lite0_timm_processor()`, tf_efficientnet_lite0's timm image processor, offline.
- `helpers.accelerator`: `cpu_accelerator()`, the Accelerator tests hand to `tl_hub.train.train`.

tests/ is on sys.path under pytest (the rootdir conftest), so tests import these as
`from helpers.tiny_models import tiny_checkpoint`.
"""
