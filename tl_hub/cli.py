"""The `tl-hub` command line: train, quickstart, search, policy, push, predict, evaluate.

Example:
    $ tl-hub quickstart --output-dir ./quickstart_out
    $ tl-hub policy --examples 1000 --labels 10 --model bundled:efficientnet_lite0
    $ tl-hub train recipes/configs/quickstart.yaml --epochs 5
    $ tl-hub push ./quickstart_out my-user/fashion-lite0
    $ tl-hub predict my-user/fashion-lite0 shoe.png

Every command-line handler lives here and calls a library function with typed arguments; the library
never sees an argparse Namespace. Progress goes through the `tl_hub` logger, which `main` shows on the
console (`tl_hub.reporting.use_console`). Heavy imports happen inside the handlers so `tl-hub --help` is
instant. Errors meant for the user (tl_hub.errors.TlHubError) are printed without a traceback and exit
with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path


# ----------------------------------------------------------------------------------------------
# handlers
# ----------------------------------------------------------------------------------------------
def train_command(argv: list[str]) -> int:
    """`tl-hub train [RECIPE.yaml] [--key value ...]`: run a recipe file, or a recipe given as keys only.

    A first argument that is not a flag and not `key=value` is the recipe file; a flag's value never is.

    Example:
        >>> train_command(["recipes/configs/quickstart.yaml", "--epochs", "2"])  # doctest: +SKIP
        0
        >>> train_command(["--model", "bundled:efficientnet_lite0", "--dataset", "my_images", "--epochs", "1"])  # doctest: +SKIP
        0
    """
    from tl_hub.config import RecipeConfig
    from tl_hub.finetuning import finetune

    args = list(argv)
    if args and not args[0].startswith("-") and "=" not in args[0]:
        _check_recipe_path(args[0])
        args = ["--config", *args]
    finetune(RecipeConfig.from_args(args))
    return 0


def search_command(argv: list[str], *, time_budget: str, storage: str | None) -> int:
    """`tl-hub search [RECIPE.yaml] --time-budget 30m [--storage URL] [--key value ...]`: `tl_hub.search`.

    As for `tl-hub train`, a first argument that is not a flag and not `key=value` is the recipe file (which may
    hold a `search:` block); the other arguments are recipe keys.

    Example:
        >>> search_command(["recipes/search/fashion.yaml"], time_budget="10m", storage=None)  # doctest: +SKIP
        0
    """
    from tl_hub.config import parse_overrides
    from tl_hub.config_parsing import read_yaml
    from tl_hub.search_run import search

    values: dict = {}
    overrides = list(argv)
    if overrides and not overrides[0].startswith("-") and "=" not in overrides[0]:
        _check_recipe_path(overrides[0])
        values = read_yaml(Path(overrides.pop(0)))
    values.update(parse_overrides(overrides))
    result = search(values, time_budget=time_budget, storage=storage)
    print(f"leaderboard: {Path(result.output_dir) / 'leaderboard.csv'} ({len(result.leaderboard)} trials, stopped: "
          f"{result.stopped})")
    return 0


def _check_recipe_path(text: str) -> None:
    """A positional argument of `tl-hub train` must be a recipe YAML; say how to pass a dataset instead."""
    from pathlib import Path

    from tl_hub.errors import ConfigError

    path = Path(text).expanduser()
    if path.suffix.lower() in (".yaml", ".yml") or path.is_file():
        return
    kind = "a folder" if path.is_dir() else "not a recipe file (.yaml)"
    hint = f"; to rerun the run in it: tl-hub train {path / 'recipe.yaml'}" if (path / "recipe.yaml").is_file() else ""
    raise ConfigError(f"{text!r} is {kind}; the optional first argument of `tl-hub train` is a recipe YAML. To train "
                      f"without one, give every key as a flag, e.g. tl-hub train --dataset {text} --epochs 1{hint}")


def quickstart_command(output_dir: str | None = None, overrides: list[str] | None = None) -> int:
    """`tl-hub quickstart`: the offline demo recipe (bundled Lite0 on bundled Fashion-MNIST).

    Example:
        >>> quickstart_command("quickstart_out")  # doctest: +SKIP
        0
    """
    from tl_hub.config import quickstart_config
    from tl_hub.finetuning import finetune

    config = quickstart_config(list(overrides or []), output_dir=output_dir)
    print(f"tl-hub quickstart: {config.model} on {config.dataset}, image_size {config.image_size}, "
          f"policy {config.policy}, {config.epochs} epochs -> {config.output_dir}", flush=True)
    finetune(config)
    return 0


def policy_command(examples: int, labels: int, model: str | None = None, policy: str | None = "auto",
                   label_counts: str | None = None) -> int:
    """`tl-hub policy --examples N --labels K [--model SOURCE] [--policy P] [--label-counts 900,50,...]`: print
    the choice and why (with uneven label counts, `auto` reads the smaller labels), and with a model its depth
    table (depth, modules, parameters, frozen/trains).

    Example:
        >>> policy_command(examples=1000, labels=10)  # doctest: +ELLIPSIS
        policy: head
        ...
        0
    """
    from tl_hub.errors import ConfigError
    from tl_hub.policy import explain_policy

    if isinstance(labels, bool) or not isinstance(labels, int) or labels < 2:
        raise ConfigError(f"--labels: got {labels!r}; an image classifier needs at least 2 labels")
    loaded, num_depths = None, None
    if model:
        from tl_hub.backbone import load_backbone
        from tl_hub.depth import depth_info

        loaded = load_backbone(model, [f"label_{i}" for i in range(labels)])
        num_depths = depth_info(loaded).max_depth + 1
    counts = None
    if label_counts:
        try:
            counts = [int(part) for part in label_counts.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"--label-counts: got {label_counts!r}; give one count per label, e.g. 900,900,50") from None
    chosen = explain_policy(examples, labels, requested=policy or "auto", num_depths=num_depths, label_counts=counts)
    knobs = ""
    if chosen.train_fraction is not None:
        knobs = f" (train_fraction {chosen.train_fraction:g})"
    if chosen.head_epochs_fraction is not None:
        knobs = f" (head_epochs_fraction {chosen.head_epochs_fraction:g})"
    print(f"policy: {chosen.name}{knobs}")
    print(textwrap.fill(chosen.reason, width=100))
    if loaded is not None:
        from tl_hub.freezing import apply_policy

        phase = "head" if chosen.name == "lp-ft" else None
        summary = apply_policy(loaded, chosen, phase=phase)
        title = f"{model}: {num_depths} depths"
        if phase:
            title += " (lp-ft phase 'head'; phase 'full' then trains every depth)"
        print(f"\n{title}\n{summary.table()}")
    return 0


def push_command(output_dir: str, repo_id: str, *, private: bool | None = None, revision: str | None = None,
                 commit_message: str | None = None, create_pr: bool = False, force: bool = False) -> int:
    """`tl-hub push OUTPUT_DIR REPO_ID [--private|--public] [--revision] [--commit-message] [--create-pr] [--force]`:
    push, then print the commit URL (progress lines come through the logger).

    Example:
        >>> push_command("tl_hub_output/quickstart", "me/fashion-lite0")  # doctest: +SKIP
        https://huggingface.co/me/fashion-lite0/commit/...
        0
    """
    from tl_hub.hub import push_to_hub

    url = push_to_hub(output_dir, repo_id, private=private, revision=revision, commit_message=commit_message,
                      create_pr=create_pr, force=force)
    print(url)
    return 0


def predict_command(model: str, images: list[str], *, top_k: int = 5, revision: str | None = None,
                    as_json: bool = False, threshold: float | None = None) -> int:
    """`tl-hub predict REPO_OR_DIR IMAGE... [--top-k K] [--threshold T] [--revision R] [--json]`: a table, or
    JSON. A multi-label model prints every label scoring at least `threshold` (default: the model's own), or
    "(no label)" when none does.

    Example:
        >>> predict_command("me/fashion-lite0", ["shoe.png"], top_k=2)  # doctest: +SKIP
        shoe.png
          Sneaker  0.9300
          Sandal   0.0500
        0
    """
    from tl_hub.hub import predict

    results = predict(model, list(images), top_k=top_k, revision=revision, threshold=threshold)
    if as_json:
        print(json.dumps([{"image": img, "predictions": preds} for img, preds in zip(images, results, strict=True)],
                         indent=2))
        return 0
    for image, preds in zip(images, results, strict=True):
        print(image)
        if not preds:
            print("  (no label)")
            continue
        width = max(len(p["label"]) for p in preds)
        for p in preds:
            print(f"  {p['label']:<{width}}  {p['score']:.4f}")
    sys.stdout.flush()
    return 0


def evaluate_command(model: str, dataset: str, *, output_dir: str, split: str | None = None,
                     revision: str | None = None, batch_size: int = 64, overwrite: bool = False,
                     label_separator: str | None = None) -> int:
    """`tl-hub evaluate MODEL DATASET [--split S] [--output-dir DIR] [--revision R] [--batch-size N] [--overwrite]
    [--label-separator C]`:
    the metrics on the console, metrics.json / confusion_matrix.png / evaluation.md in the folder.

    Example:
        >>> evaluate_command("tl_hub_output/quickstart", "my_test_images", output_dir="eval")  # doctest: +SKIP
        my_test_images, all images: 412 images
        accuracy 0.9102, precision_macro 0.9120, recall_macro 0.9102, f1_macro 0.9101
        written: eval/metrics.json, eval/confusion_matrix.png, eval/evaluation.md
        0
    """
    from tl_hub.evaluation import EVALUATION_FILE, evaluate_model

    result = evaluate_model(model, dataset, output_dir=output_dir, split=split, revision=revision,
                            batch_size=batch_size, overwrite=overwrite, label_separator=label_separator)
    print(f"{dataset}, {result.split}: {result.num_examples:,} images")
    print(", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if isinstance(v, float)))
    out = Path(result.output_dir)
    print("written: " + ", ".join(str(out / n) for n in ("metrics.json", "confusion_matrix.png", EVALUATION_FILE)
                                  if (out / n).exists()))
    return 0


# ----------------------------------------------------------------------------------------------
# the parser and the entry point
# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `tl-hub` (sub-commands and their options)."""
    parser = argparse.ArgumentParser(prog="tl-hub", description=__doc__.split("\n\n")[0])
    from tl_hub import __version__

    parser.add_argument("--version", action="version", version=f"tl-hub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from tl_hub.config import RecipeConfig  # light: no torch/evaluate import

    sub.add_parser(
        "train", usage="tl-hub train [RECIPE.yaml] [--key value ...]",
        help="fine-tune a backbone: a recipe YAML and/or --key value for any recipe key",
        description="Train from a recipe file (recipes/configs/), from keys alone (tl-hub train --dataset my_images "
                    "--epochs 1), or both (the keys win). The same command over an unfinished run resumes it.",
        epilog=RecipeConfig.format_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    p = sub.add_parser(
        "quickstart", help="offline demo: bundled ImageNet EfficientNet-Lite0 on bundled Fashion-MNIST",
        usage="tl-hub quickstart [--output-dir DIR] [--key value ...]",
        epilog="Any recipe key can follow (--epochs 3). The same command again resumes an unfinished quickstart and "
               "trains a finished one again; an output folder that holds another run is refused: pass another "
               "--output-dir, or --overwrite_output_dir true to replace tl_hub's files there "
               "(--resume_from_checkpoint none starts over).",
    )
    p.add_argument("--output-dir", default="tl_hub_output/quickstart", help="where the Hub-ready folder goes")

    p = sub.add_parser(
        "search", usage="tl-hub search [RECIPE.yaml] --time-budget 30m [--storage URL] [--key value ...]",
        help="AutoML on a time budget: try backbones x policies x learning rates, keep the best model",
        description="The recipe's keys are fixed for every trial; its `search:` block lists the candidates "
                    "(backbones, policies, learning_rate: [low, high], epochs). The best trial's model ends up in "
                    "output_dir with leaderboard.csv; the same command resumes a killed search.",
    )
    p.add_argument("--time-budget", default="30m", help="e.g. 90s, 30m, 2h (default 30m)")
    p.add_argument("--storage", default=None,
                   help="an Optuna RDB URL several workers share (default: sqlite study.db in output_dir)")

    p = sub.add_parser("policy", help="explain which freeze policy a dataset size gets")
    p.add_argument("--examples", type=int, required=True, help="number of training images")
    p.add_argument("--labels", type=int, required=True, help="number of classes")
    p.add_argument("--model", default=None, help="backbone source: also print its depth table")
    p.add_argument("--policy", default="auto", help="force a policy (head|partial|full|scratch|lp-ft) to see its table")
    p.add_argument("--label-counts", default=None,
                   help="training images per label, comma-separated (uneven labels: auto reads the smaller ones)")

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
    p.add_argument("--threshold", type=float, default=None,
                   help="multi-label models: print every label scoring at least this (default: the model's own)")
    p.add_argument("--revision", default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("evaluate", help="evaluate a Hub repo or a local output folder on any dataset",
                       description="Which images: --split when given, else the dataset's own validation/test split, "
                                   "else every image. The dataset's label names must be the model's.")
    p.add_argument("model", help="repo id or local folder")
    p.add_argument("dataset", help="anything `tl-hub train --dataset` takes: a folder, a CSV/JSONL file, a Hub id")
    p.add_argument("--split", default=None, help="the split to evaluate (e.g. test)")
    p.add_argument("--output-dir", default="tl_hub_evaluation", help="where metrics.json and the plots go")
    p.add_argument("--revision", default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--overwrite", action="store_true", help="write into a folder that holds other files")
    p.add_argument("--label-separator", default=None,
                   help="multi-label CSV/TSV: the character between the labels of a cell (e.g. ';')")
    return parser


def stop_on_sigterm() -> None:
    """Make `kill` (SIGTERM) stop a run like Ctrl-C: it ends through the same path, which says how to resume.
    (Only the main thread may install a handler; elsewhere this does nothing.)"""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _dispatch(args: argparse.Namespace, extra: list[str]) -> int:
    if args.command == "train":
        return train_command(extra)
    if args.command == "search":
        return search_command(extra, time_budget=args.time_budget, storage=args.storage)
    if args.command == "quickstart":
        return quickstart_command(output_dir=args.output_dir, overrides=extra)
    if args.command == "policy":
        return policy_command(examples=args.examples, labels=args.labels, model=args.model, policy=args.policy,
                              label_counts=args.label_counts)
    if args.command == "push":
        return push_command(args.output_dir, args.repo_id, private=args.private, revision=args.revision,
                            commit_message=args.commit_message, create_pr=args.create_pr, force=args.force)
    if args.command == "predict":
        return predict_command(args.model, list(args.images), top_k=args.top_k, revision=args.revision,
                               as_json=args.json, threshold=args.threshold)
    if args.command == "evaluate":
        return evaluate_command(args.model, args.dataset, output_dir=args.output_dir, split=args.split,
                                revision=args.revision, batch_size=args.batch_size, overwrite=args.overwrite,
                                label_separator=args.label_separator)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse only admits the commands above


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tl-hub` console script; returns the exit status."""
    from tl_hub.hardware import prepare_process

    prepare_process()  # first, before torch loads: OpenMP threads that sleep when idle, no bars into a pipe
    from tl_hub.errors import TlHubError
    from tl_hub.reporting import use_console

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in {"train", "quickstart", "search"}:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    use_console()
    stop_on_sigterm()
    try:
        return _dispatch(args, extra)
    except TlHubError as err:
        print(f"tl-hub {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
