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
