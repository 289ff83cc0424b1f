"""The structure rules of tl_hub/, read from its source: no import cycles (module-level or inside functions),
no module importing another's private names, functions of a readable length, one way of reporting
(the `tl_hub` logger; only the command line prints), command-line parsing only in the CLI, a light
`import tl_hub`, and docstring examples that run."""

from __future__ import annotations

import ast
import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tl_hub"
#: longest function body (lines of code, docstring excluded) a module may hold
MAX_FUNCTION_LINES = 100
#: the modules that talk to a terminal: the command line (and RecipeConfig.format_help's caller there)
PRINTING_MODULES = {"tl_hub.cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imported_modules(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported tl_hub module, names taken from it, line) for every import statement, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "tl_hub"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "tl_hub":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in MODULES:  # `from tl_hub import checkpoint`: the module itself
                    found.append((submodule, [], node.lineno))
                else:
                    found.append((base, [alias.name], node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in _imported_modules(name, path) if target != name}
            for name, path in MODULES.items()}


def test_no_import_cycles_inside_tl_hub():
    """Module-level and function-level imports both count: a cycle through a lazy import is still a cycle."""
    graph = _graph()
    unknown = sorted({t for targets in graph.values() for t in targets} - set(MODULES))
    assert not unknown, f"imports of tl_hub modules that do not exist: {unknown}"
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for name in MODULES:
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_another_modules_private_names():
    private = [f"{MODULES[name].relative_to(PACKAGE.parent)}:{line} takes {taken} from {target}"
               for name, path in MODULES.items()
               for target, names, line in _imported_modules(name, path)
               for taken in names if taken.startswith("_") and not taken.startswith("__")]
    assert not private, private


def test_functions_stay_readable():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[1] if ast.get_docstring(node) and len(node.body) > 1 else node.body[0]
                lines = node.end_lineno - first.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_only_the_command_line_prints_or_parses_arguments():
    """The library reports through the `tl_hub` logger (tl_hub.reporting) and takes typed arguments."""
    offenders = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if name not in PRINTING_MODULES and isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print":
                offenders.append(f"{name}:{node.lineno} print()")
            if name != "tl_hub.cli" and isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if "argparse" in names:
                    offenders.append(f"{name}:{node.lineno} imports argparse")
    assert not offenders, offenders


def test_importing_tl_hub_is_light_and_every_module_imports_alone():
    code = (
        "import sys, importlib\n"
        "import tl_hub, tl_hub.cli, tl_hub.config, tl_hub.finetuning, tl_hub.data\n"
        "heavy = sorted({'torch', 'transformers', 'datasets', 'evaluate', 'accelerate'} & set(sys.modules))\n"
        "print('heavy', heavy)\n"
        f"for name in {sorted(MODULES)!r}:\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "heavy []" in proc.stdout and proc.stdout.strip().endswith("ok"), proc.stdout


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples_run(name, monkeypatch):
    """Every example that is not marked `+SKIP` runs and prints what its docstring says."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # examples name repository paths (recipes/...)
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):  # globals: the module's own
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_no_public_name_is_shadowed_by_a_submodule():
    """`import tl_hub.X` sets the attribute `tl_hub.X` to the module: a lazily exported function of the same
    name (`tl_hub.search`) would turn into a module as soon as anything imported that submodule."""
    import tl_hub

    submodules = {p.stem for p in Path(tl_hub.__file__).parent.glob("*.py")}
    submodules |= {p.name for p in Path(tl_hub.__file__).parent.iterdir() if (p / "__init__.py").is_file()}
    assert not sorted(set(tl_hub.__all__) & submodules)
