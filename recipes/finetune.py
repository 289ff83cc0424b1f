"""Fine-tune an image classifier from a tl_hub recipe: the same script on a laptop CPU, one GPU or many.

Run it in any of three ways (overrides after the config win over the YAML: --key value, --key=value,
or key=value; `--help` lists every key):

    python recipes/finetune.py --config recipes/configs/quickstart.yaml
    accelerate launch recipes/finetune.py --config recipes/configs/beans_vit.yaml --epochs 3
    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml recipes/finetune.py \
        --config recipes/configs/food101_convnext.yaml

On CPU, `accelerate launch --cpu` (or a config with use_cpu: true) starts the script with
OMP_NUM_THREADS=1 unless told otherwise; pass `--num_cpu_threads_per_process N` (N = your cores) to
accelerate launch, or training runs several times slower.

From Python (run from the repository root):

    from recipes.finetune import main
    main(["--config", "recipes/configs/quickstart.yaml", "--epochs", "2"])

or skip the script: `tl_hub.finetune(tl_hub.RecipeConfig.from_yaml("recipes/configs/quickstart.yaml"))`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `--config PATH` plus overrides, run `tl_hub.finetune`, return the exit status (0 = ok);
    `--help` lists every recipe key."""
    from tl_hub.config import RecipeConfig
    from tl_hub.errors import TlHubError

    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(RecipeConfig.format_help())
        return 0
    from tl_hub.cli import stop_on_sigterm

    stop_on_sigterm()
    try:
        config = RecipeConfig.from_args(args)
        from tl_hub.finetuning import finetune

        finetune(config)
    except TlHubError as err:
        print(f"finetune.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("finetune.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
