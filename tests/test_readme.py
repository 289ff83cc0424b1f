"""README's two commands and CI stay in step: .ci/run runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

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
