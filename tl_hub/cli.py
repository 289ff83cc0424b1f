"""The `tl-hub` command line: train, quickstart, policy, push, predict.

Example:
    $ tl-hub quickstart --output-dir ./quickstart_out
    $ tl-hub policy --examples 1000 --labels 10 --model bundled:efficientnet_lite0
    $ tl-hub train recipes/configs/quickstart.yaml --epochs 5
    $ tl-hub push ./quickstart_out my-user/fashion-lite0
    $ tl-hub predict my-user/fashion-lite0 shoe.png

Each sub-command is a thin wrapper over a library function; heavy imports happen inside the handlers so
`tl-hub --help` is instant. Errors meant for the user (tl_hub.errors.TlHubError) are printed without a
traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_policy(args: argparse.Namespace) -> int:
    from tl_hub.policy import policy_command

    return policy_command(examples=args.examples, labels=args.labels, model=args.model, policy=args.policy)


def _cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from tl_hub.finetuning import train_command

    return train_command(args.config, overrides)


def _cmd_quickstart(args: argparse.Namespace, overrides: list[str]) -> int:
    from tl_hub.finetuning import quickstart_command

    return quickstart_command(output_dir=args.output_dir, overrides=overrides)


def _cmd_push(args: argparse.Namespace) -> int:
    from tl_hub.hub import push_command

    return push_command(args)


def _cmd_predict(args: argparse.Namespace) -> int:
    from tl_hub.hub import predict_command

    return predict_command(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `tl-hub` (sub-commands and their options)."""
    parser = argparse.ArgumentParser(prog="tl-hub", description=__doc__.split("\n\n")[0])
    from tl_hub import __version__

    parser.add_argument("--version", action="version", version=f"tl-hub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from tl_hub.config import RecipeConfig  # light: no torch/evaluate import

    p = sub.add_parser("train", help="fine-tune a backbone from a recipe YAML; --key value overrides any field",
                       epilog=RecipeConfig.format_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="recipe YAML (see recipes/configs/)")

    p = sub.add_parser("quickstart", help="offline demo: bundled ImageNet EfficientNet-Lite0 on bundled Fashion-MNIST")
    p.add_argument("--output-dir", default="tl_hub_output/quickstart", help="where the Hub-ready folder goes")

    p = sub.add_parser("policy", help="explain which freeze policy a dataset size gets")
    p.add_argument("--examples", type=int, required=True, help="number of training images")
    p.add_argument("--labels", type=int, required=True, help="number of classes")
    p.add_argument("--model", default=None, help="backbone source: also print its depth table")
    p.add_argument("--policy", default="auto", help="force a policy (head|partial|full|scratch|lp-ft) to see its table")

    p = sub.add_parser("push", help="push a tl_hub output folder to the Hub as one commit")
    p.add_argument("output_dir")
    p.add_argument("repo_id")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=None,
                     help="create the repo private (the default for a new repo)")
    vis.add_argument("--public", dest="private", action="store_false", help="create the repo public")
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch")
    p.add_argument("--force", action="store_true", help="overwrite a model card that was edited on the Hub")

    p = sub.add_parser("predict", help="classify images with a Hub repo or a local output folder")
    p.add_argument("model", help="repo id or local folder")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--revision", default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tl-hub` console script; returns the exit status."""
    from tl_hub.errors import TlHubError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    takes_overrides = args.command in {"train", "quickstart"}
    if extra and not takes_overrides:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "train":
            return _cmd_train(args, extra)
        if args.command == "quickstart":
            return _cmd_quickstart(args, extra)
        if args.command == "policy":
            return _cmd_policy(args)
        if args.command == "push":
            return _cmd_push(args)
        if args.command == "predict":
            return _cmd_predict(args)
    except TlHubError as err:
        print(f"tl-hub {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
