"""Benchmark section `search` (issue [7/7]): does `tl_hub.search` on a budget beat `auto` and the fixed policies?

On a class-balanced N-image subset of the Fashion-MNIST train split (written as an image folder with the full
10,000-image test split beside it: `train/` + `test/`), each arm trains on train (selecting on tl_hub's
stratified carve-out of train, `test_split: none`) and its saved model is then scored once on the 10k test set:

- `auto`: `tl_hub.finetune(policy=auto)`; its wall time W sets the search's budget, 3 x W;
- `fixed:<policy>`: each fixed policy at its default learning rate (the same recipe otherwise);
- `search`: `tl_hub.search(time_budget=3 W)` over the default policies, a learning-rate range and epochs; its
  own test evaluation (once, on the best trial) is the number reported.

    python tests/benchmarks/search_benchmark.py --n 1000 --out tests/benchmarks/results/2026-11-28-search-n1000
    python tests/benchmarks/search_benchmark.py --n 10000 --out tests/benchmarks/results/2026-11-28-search-n10000
    python tests/benchmarks/run.py --sections search --out bench_results/search   # the same, via run.py

Results: results.json (every arm: wall time, validation and test accuracy; the search's leaderboard) and a
short results.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fashion_mnist as fm  # noqa: E402

RECIPE = {"model": "bundled:efficientnet_lite0", "image_size": 112, "epochs": 10, "batch_size": 32, "seed": 0,
          "num_workers": 0, "progress": False, "test_split": "none"}
SEARCH_BLOCK = {"learning_rate": [1e-5, 1e-2], "epochs": [5, 10, 20]}


def write_folder(root: Path, n_train: int, seed: int = 0) -> Path:
    """train/<label>/*.png (a balanced n_train subset) and test/<label>/*.png (all 10,000)."""
    from PIL import Image

    parts = fm.load_subsets(n_train, seed=seed)
    for split, (images, labels) in parts.items():
        for i, (image, label) in enumerate(zip(images, labels)):
            path = root / split / fm.LABELS[int(label)].replace("/", "-") / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
    return root


def test_accuracy(model_dir: Path, folder: Path, out: Path) -> float:
    """The saved model on the 10k test split (tl_hub.evaluate_model: the model's own eval transform)."""
    from tl_hub.evaluation import evaluate_model

    return float(evaluate_model(model_dir, str(folder), output_dir=out, split="test", overwrite=True).metrics["accuracy"])


def run_finetune(folder: Path, work: Path, name: str, **overrides: Any) -> dict[str, Any]:
    from tl_hub.finetuning import finetune

    done = _finished_arm(work, name)
    if done is not None:
        return done
    t0 = time.perf_counter()
    result = finetune(**{**RECIPE, "dataset": str(folder), "output_dir": str(work / name), **overrides})
    wall = time.perf_counter() - t0
    acc = test_accuracy(Path(result.output_dir), folder, work / f"{name}-test")
    return {"arm": name, "policy": result.policy.name, "wall_s": round(wall, 1),
            "val_accuracy": result.metrics.get("accuracy"), "test_accuracy": acc}


def _finished_arm(work: Path, name: str) -> dict[str, Any] | None:
    """An arm a previous invocation finished and scored (work/NAME and work/NAME-test): its recorded numbers
    (wall = the run's total_runtime_s), so an interrupted benchmark goes on without training it again."""
    info, test = work / name / "run_info.json", work / f"{name}-test" / "metrics.json"
    if not (info.is_file() and test.is_file()):
        return None
    run_info, metrics = json.loads(info.read_text()), json.loads((work / name / "metrics.json").read_text())
    return {"arm": name, "policy": run_info["policy"]["name"], "wall_s": round(run_info["total_runtime_s"], 1),
            "val_accuracy": metrics["final"]["accuracy"],
            "test_accuracy": json.loads(test.read_text())["final"]["accuracy"], "reused": True}


def _finished_search(out: Path) -> dict[str, Any] | None:
    """A search a previous invocation finished (its folder's run_info.json has the search summary)."""
    from tl_hub.leaderboard import read_leaderboard

    info_file = out / "run_info.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    if "search" not in info:
        return None
    summary, rows = info["search"], read_leaderboard(out / "leaderboard.csv")
    best = next(r for r in rows if r.trial == summary["best_trial"])
    return {"arm": "search", "wall_s": round(summary["spent_s"] + summary["test_eval_s"], 1),
            "budget_s": round(summary["time_budget_s"], 1), "search_spent_s": summary["spent_s"],
            "test_eval_s": summary["test_eval_s"], "stopped": summary["stopped"], "best": vars(best),
            "val_accuracy": best.score, "test_accuracy": (summary.get("test") or {}).get("accuracy"),
            "leaderboard": [vars(r) for r in rows], "reused": True,
            "leaderboard_md": (out / "README.md").read_text().split("## How this model was chosen")[1]
            .split("## How to use")[0].strip()}


def run_search(folder: Path, work: Path, budget_s: float) -> dict[str, Any]:
    from tl_hub.search_run import search

    done = _finished_search(work / "search")
    if done is not None:
        return done
    t0 = time.perf_counter()
    recipe = {k: v for k, v in RECIPE.items() if k != "test_split"}  # the search keeps test out of its trials itself
    result = search({**recipe, "dataset": str(folder), "output_dir": str(work / "search"), "search": SEARCH_BLOCK},
                    time_budget=budget_s)
    wall = time.perf_counter() - t0
    info = json.loads((Path(result.output_dir) / "run_info.json").read_text())
    return {"arm": "search", "wall_s": round(wall, 1), "budget_s": round(budget_s, 1),
            "search_spent_s": info["search"]["spent_s"], "test_eval_s": info["search"]["test_eval_s"],
            "stopped": result.stopped,
            "best": vars(result.best), "val_accuracy": result.best.score,
            "test_accuracy": (result.test_metrics or {}).get("accuracy"),
            "leaderboard": [vars(r) for r in result.leaderboard],
            "leaderboard_md": (Path(result.output_dir) / "README.md").read_text().split(
                "## How this model was chosen")[1].split("## How to use")[0].strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--fixed", default="head,partial,full,lp-ft", help="fixed policies to run (comma-separated)")
    parser.add_argument("--out", default="bench_results/search")
    parser.add_argument("--work", default=None, help="scratch folder (default: OUT/work)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    folder = write_folder(work / f"fashion-{args.n}", args.n)
    arms = [run_finetune(folder, work, "auto", policy="auto")]
    budget = 3 * arms[0]["wall_s"]
    for policy in [p for p in args.fixed.split(",") if p]:
        if policy == arms[0]["policy"]:
            arms.append({**arms[0], "arm": f"fixed:{policy}", "note": "the same recipe as auto"})
        else:
            arms.append({**run_finetune(folder, work, f"fixed-{policy}", policy=policy), "arm": f"fixed:{policy}"})
    arms.append(run_search(folder, work, budget))
    write_results(out, args.n, arms)
    return 0


def write_results(out: Path, n: int, arms: list[dict[str, Any]]) -> None:
    fixed = [a for a in arms if a["arm"].startswith("fixed:")]
    best_fixed = max(fixed, key=lambda a: a["test_accuracy"]) if fixed else None
    auto, search_arm = arms[0], arms[-1]
    summary = {"n_train": n, "test_images": 10_000, "auto_test": auto["test_accuracy"],
               "best_fixed": best_fixed and {"arm": best_fixed["arm"], "test": best_fixed["test_accuracy"]},
               "search_test": search_arm["test_accuracy"],
               "search_minus_best_fixed_pt": best_fixed and round(100 * (search_arm["test_accuracy"] - best_fixed["test_accuracy"]), 2),
               "search_minus_auto_pt": round(100 * (search_arm["test_accuracy"] - auto["test_accuracy"]), 2),
               "budget_s": search_arm["budget_s"], "search_wall_s": search_arm["wall_s"]}
    (out / "results.json").write_text(json.dumps({"summary": summary, "arms": arms}, indent=2))
    lines = [f"# search benchmark, N = {n} (Fashion-MNIST, full 10k test set)", "",
             "| arm | policy | wall (s) | validation acc | test acc |", "|---|---|---|---|---|"]
    for a in arms:
        lines.append(f"| {a['arm']} | {a.get('policy', a.get('best', {}).get('policy', ''))} | {a['wall_s']} | "
                     f"{a['val_accuracy']:.4f} | {a['test_accuracy']:.4f} |")
    lines += ["", f"budget 3 x auto = {summary['budget_s']} s; the search used {search_arm['search_spent_s']} s of it "
              f"(stopped: {search_arm['stopped']}), then {search_arm['test_eval_s']} s for its one test evaluation; "
              "search - best fixed: "
              f"{summary['search_minus_best_fixed_pt']} pt; search - auto: {summary['search_minus_auto_pt']} pt", "",
              "## The search's card section", "", search_arm["leaderboard_md"]]
    (out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
