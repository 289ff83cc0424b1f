"""A search's leaderboard: one row per trial, as `leaderboard.csv`, a Markdown table and a score-vs-time plot.

The rows come from the trials of the Optuna study (`rows_from_trials`); the CSV is what the output
folder keeps and pushes, and the model card's "How this model was chosen" reads it back
(`read_leaderboard`, `markdown_table`) with the plot `search_scores.png` (`plot_scores`).

Example:
    >>> row = LeaderboardRow(trial=0, backbone="bundled:efficientnet_lite0", policy="head", fraction=None,
    ...                      learning_rate=1e-3, epochs=5, epochs_run=5, score=0.81, cost_s=4.2, state="complete")
    >>> row.pruned, markdown_table([row]).splitlines()[0].startswith("| trial | backbone")
    (False, True)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["AUTO_PICK", "AUTO_PICK_NOTE", "LEADERBOARD_COLUMNS", "LeaderboardRow", "markdown_table", "plot_scores",
           "read_leaderboard", "rows_from_trials", "write_leaderboard"]


@dataclass
class LeaderboardRow:
    """One trial: what it tried, how far it ran, its best validation score, what it cost, how it ended.

    `state` is Optuna's: complete, pruned (stopped by the pruner, or by the time budget: `note` says which),
    fail, or running (another worker's trial, or one a killed search will retry)."""

    trial: int
    backbone: str
    policy: str
    fraction: float | None
    learning_rate: float | None
    epochs: int
    epochs_run: int
    score: float | None
    cost_s: float
    state: str
    note: str = ""

    @property
    def pruned(self) -> bool:
        return self.state == "pruned"


LEADERBOARD_COLUMNS: tuple[str, ...] = (*(f.name for f in fields(LeaderboardRow)), "pruned")

#: the user attribute of the trial that runs what `policy: auto` would (the search's baseline)
AUTO_PICK = "auto_pick"
AUTO_PICK_NOTE = "auto's pick"  # its leaderboard note


def rows_from_trials(trials: Iterable[Any]) -> list[LeaderboardRow]:
    """Leaderboard rows from Optuna `FrozenTrial`s (the user attributes `tl_hub.search` records), best first;
    trials that never started training (`not_run`) are left out.

    Example:
        >>> rows_from_trials([])
        []
    """
    rows = []
    for t in trials:
        attrs = t.user_attrs
        if attrs.get("not_run") or "policy" not in attrs:
            continue
        values = list(t.intermediate_values.values())
        score = t.value if t.value is not None else (max(values) if values else None)
        folder = int(attrs.get("folder_trial", t.number))
        note = "; ".join(part for part in (AUTO_PICK_NOTE if attrs.get(AUTO_PICK) else "", str(attrs.get("note", "")),
                                           f"resumed trial {folder}'s run" if folder != t.number else "") if part)
        rows.append(LeaderboardRow(
            trial=int(t.number), backbone=str(attrs.get("backbone")),
            policy=str(attrs["policy"]), fraction=attrs.get("fraction"), learning_rate=attrs.get("learning_rate"),
            epochs=int(attrs.get("epochs", 0)), epochs_run=int(attrs.get("epochs_run", len(values))),
            score=None if score is None else float(score), cost_s=float(attrs.get("cost_s", 0.0)),
            state=t.state.name.lower(), note=note))
    return sorted(rows, key=lambda r: (r.score is None, -(r.score or 0.0), r.trial))


def write_leaderboard(path: str | Path, rows: Sequence[LeaderboardRow]) -> Path:
    """Write the rows as CSV (`LEADERBOARD_COLUMNS`); returns the path.

    Example:
        >>> write_leaderboard("out/leaderboard.csv", rows)  # doctest: +SKIP
    """
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(LEADERBOARD_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({**{k: "" if v is None else v for k, v in asdict(row).items()}, "pruned": row.pruned})
    tmp.replace(out)
    return out


def read_leaderboard(path: str | Path) -> list[LeaderboardRow]:
    """The rows of a `leaderboard.csv` ([] when the file is missing).

    Example:
        >>> read_leaderboard("no/such/leaderboard.csv")
        []
    """
    source = Path(path)
    if not source.is_file():
        return []
    with source.open(newline="", encoding="utf-8") as handle:
        return [_row(record) for record in csv.DictReader(handle)]


def _row(record: dict[str, str]) -> LeaderboardRow:
    def number(key: str) -> float | None:
        return float(record[key]) if record.get(key) not in (None, "") else None

    return LeaderboardRow(
        trial=int(record["trial"]), backbone=record["backbone"], policy=record["policy"], fraction=number("fraction"),
        learning_rate=number("learning_rate"), epochs=int(record["epochs"]), epochs_run=int(record["epochs_run"]),
        score=number("score"), cost_s=float(record["cost_s"]), state=record["state"], note=record.get("note", ""))


def markdown_table(rows: Sequence[LeaderboardRow], metric: str = "score") -> str:
    """The leaderboard as a Markdown table (best first, as given).

    Example:
        >>> print(markdown_table([]))
        | trial | backbone | policy | learning rate | epochs run | validation score | cost (s) | pruned |
        |---|---|---|---|---|---|---|---|
    """
    header = ["trial", "backbone", "policy", "learning rate", "epochs run", f"validation {metric}", "cost (s)", "pruned"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        policy = r.policy if r.fraction is None else f"{r.policy}@{r.fraction:g}"
        lr = "default" if r.learning_rate is None else f"{r.learning_rate:.2e}"
        score = "–" if r.score is None or math.isnan(r.score) else f"{r.score:.4f}"
        ended = "yes" if r.pruned else "no" if r.state == "complete" else r.state
        pruned = ended + (f" ({r.note})" if r.note else "")
        lines.append(f"| {r.trial} | {r.backbone} | {policy} | {lr} | {r.epochs_run}/{r.epochs} | {score} | "
                     f"{r.cost_s:.1f} | {pruned} |")
    return "\n".join(lines)


def plot_scores(rows: Sequence[LeaderboardRow], path: str | Path, *, metric: str = "score") -> bool:
    """Validation score against cumulative search time (trial order), complete and pruned trials marked apart;
    False when there is nothing to plot. Drawn on a bare Agg canvas (no pyplot, as in `tl_hub.card`).

    Example:
        >>> plot_scores([], "out/search_scores.png")
        False
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ordered = sorted((r for r in rows if r.score is not None), key=lambda r: r.trial)
    if not ordered:
        return False
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    elapsed, points = 0.0, []
    for r in sorted(rows, key=lambda r: r.trial):
        elapsed += r.cost_s
        if r.score is not None:
            points.append((elapsed, r.score, r.pruned))
    for pruned, marker, label in ((False, "o", "complete"), (True, "x", "pruned")):
        xs = [p[0] for p in points if p[2] == pruned]
        ys = [p[1] for p in points if p[2] == pruned]
        if xs:
            ax.scatter(xs, ys, marker=marker, label=label)
    best, running = [], -math.inf
    for x, y, _ in points:
        running = max(running, y)
        best.append((x, running))
    ax.step([b[0] for b in best], [b[1] for b in best], where="post", color="grey", label="best so far")
    ax.set_xlabel("search time (s, trials' cost added up)")
    ax.set_ylabel(f"validation {metric}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(path), dpi=100, metadata={"Software": None})
    return True
