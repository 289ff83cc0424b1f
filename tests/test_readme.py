"""The README and its commands: CI runs exactly the README's test command, every test it cites exists, and the
commands it shows (README.md, recipes/README.md) work pasted in order on a fresh output tree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    test_commands = [b for b in _bash_blocks(readme) if "pytest" in b and "\n" not in b]
    assert len(test_commands) == 1, f"README needs exactly one one-line test command, found {test_commands}"
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_commands[0] in ci_lines, ".ci/run must contain the README's test command verbatim"


def test_readme_quickstart_command_installs_and_runs_the_quickstart() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = _bash_blocks(readme)[0]
    assert "\n" not in first and first.endswith("tl-hub quickstart"), first
    assert '".[quickstart]"' in first
    assert (ROOT / "recipes" / "configs" / "quickstart.yaml").is_file()


def test_every_test_the_readme_cites_exists() -> None:
    """The Guarantees table cites tests as `tests/file.py::name` (a bare `::name` continues the file cited
    last): each must be a test function in that file, so a renamed or merged test cannot leave a promise
    without its proof."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    current: Path | None = None
    missing = []
    cited = 0
    for file, name in re.findall(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`", readme):
        if file:
            current = ROOT / file
            if not current.is_file():
                missing.append(file)
                continue
        if name:
            cited += 1
            source = current.read_text(encoding="utf-8") if current is not None and current.is_file() else ""
            if not re.search(rf"^def {name}\(", source, flags=re.M):
                missing.append(f"{current.relative_to(ROOT) if current else '?'}::{name}")
    assert cited >= 10 and not missing, missing


# ---------------------------------------------------------------------------------------------------
# The README's commands, pasted in order


def _commands(doc: Path) -> list[str]:
    """Every command line of the bash blocks of a Markdown file, in order (comments dropped)."""
    lines = []
    for block in _bash_blocks(doc.read_text(encoding="utf-8")):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def _offline_recipe(command: str) -> bool:
    """A command that trains from a recipe whose backbone and data ship with tl_hub (the others need the Hub)."""
    import yaml

    match = re.search(r"--config (\S+\.yaml)", command)
    if not match:
        return True
    recipe = yaml.safe_load((ROOT / match.group(1)).read_text(encoding="utf-8"))
    return all(str(recipe.get(key, "bundled:")).startswith("bundled:") for key in ("model", "dataset"))


def _walk_plan() -> list[tuple[str, str]]:
    """(command to run, where it comes from) for README.md then recipes/README.md; what needs the network or a
    fresh venv is left to the tests that cover it (the install lines: CI itself; push/predict: test_hub.py;
    evaluate: test_evaluation.py)."""
    plan = []
    for doc in (ROOT / "README.md", ROOT / "recipes" / "README.md"):
        for command in _commands(doc):
            if "pip install" in command:  # an install-and-run line: the run part, in the installed env
                command = command.rsplit("&&", 1)[1].strip()
                if "pytest" in command or "benchmarks" in command:
                    continue
            skipped = ("hf ", "tl-hub push", "tl-hub predict", "tl-hub evaluate")
            if command.startswith(skipped) or not _offline_recipe(command):
                continue
            plan.append((command, str(doc.relative_to(ROOT))))
    return plan


def test_the_walk_covers_every_kind_of_command() -> None:
    kinds = {command.split()[0] + " " + command.split()[1] for command, _ in _walk_plan()}
    assert {"tl-hub quickstart", "tl-hub policy", "tl-hub train", "accelerate launch", "python -c",
            "python recipes/finetune.py"} <= kinds, kinds


@pytest.mark.slow
def test_readme_commands_work_pasted_in_order(tmp_path) -> None:
    """On a fresh output tree, offline: every command the README and recipes/README show, one after the other,
    succeeds (each example writes its own output folder, so none refuses another's)."""
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1",
           "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    for command, doc in _walk_plan():
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, f"{doc}: `{command}` failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    outputs = sorted(p.name for p in (tmp_path / "tl_hub_output").iterdir())
    assert {"quickstart", "quickstart-5-epochs", "fashion-keys", "quickstart-accelerate", "quickstart-python",
            "quickstart-script", "quickstart-cpu-launch"} <= set(outputs), outputs
