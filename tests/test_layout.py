"""The package's layout: serving stands without training and evaluation, the rooms import only downwards, and
configs/default.yaml is the dataclass defaults written out."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsense.config import Config, load_config

PACKAGE = Path(__file__).resolve().parent.parent / "wsense"

# room -> the rooms it must never import
FORBIDDEN = {
    "serving": {"training", "evaluation"},
    "models": {"training", "evaluation", "serving", "cli"},
    "training": {"evaluation", "serving", "cli"},
    "safety": {"training", "evaluation", "serving", "cli"},
}


# One fresh interpreter for the import tests: it imports the package alone, then the serving modules and the
# command line, then the entry points, and prints the modules each step loaded.
IMPORTS = """
import json, sys
def loaded(*rooms):
    return sorted(m for m in sys.modules if any(m == r or m.startswith(r + '.') for r in rooms))
import wsense
steps = {'package': loaded('wsense.training', 'wsense.serving')}
import wsense.serving.search, wsense.serving.web, wsense.serving.contact_sheet, wsense.cli.commands
steps['serving'] = loaded('accelerate', 'wsense.training', 'wsense.evaluation')
steps['torch'] = loaded('torch')
from wsense import SearchEngine, load_config, train, check_query
steps['entry points'] = [f.__module__ for f in (SearchEngine, load_config, train, check_query)]
print(json.dumps(steps))
"""


@pytest.fixture(scope="module")
def imports() -> dict[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_serving_loads_neither_accelerate_nor_training_nor_evaluation(imports):
    assert not imports["serving"], "importing serving loaded: " + ", ".join(imports["serving"])


def test_the_entry_points_are_exported_from_the_package_and_load_on_use(imports):
    assert imports["package"] == []  # `import wsense` loads neither training nor serving
    assert imports["entry points"] == ["wsense.serving.search", "wsense.config", "wsense.training.loop",
                                       "wsense.safety.query_check"]


def test_importing_serving_loads_no_torch(imports):
    """Search runs on numpy and ONNX Runtime (wsense.models.serving): torch loads only where a path needs it."""
    assert imports["torch"] == [], "importing serving loaded torch"


def _room(module: str) -> str | None:
    """The room of a dotted wsense module name (None for the shared modules: config, data, io, ...)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "wsense":
        return None
    return parts[1] if parts[1] in ("models", "safety", "training", "evaluation", "serving", "cli") else None


def _module_name(file: Path) -> str:
    parts = list(file.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(file: Path) -> list[tuple[int, str]]:
    """(line, wsense module) of every import in a file, those inside functions too; relative imports resolved."""
    tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
    name = _module_name(file)
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            if base == "wsense":  # from wsense import training
                found += [(node.lineno, f"wsense.{alias.name}") for alias in node.names]
    return [(line, module) for line, module in found if module == "wsense" or module.startswith("wsense.")]


def test_static_import_graph_goes_only_downwards_between_rooms():
    files = sorted(PACKAGE.rglob("*.py"))
    assert files, f"no Python files under {PACKAGE}"
    offences = []
    for file in files:
        own = _room(_module_name(file))
        where = file.relative_to(PACKAGE.parent)
        for line, module in _imports(file):
            target = _room(module)
            if target is None or target == own:
                continue
            if target in FORBIDDEN.get(own, set()):
                offences.append(f"{where}:{line}: {own} imports {module}")
            elif target == "cli" and own != "cli":
                offences.append(f"{where}:{line}: only the cli imports the cli, but {own or 'shared'} imports "
                                f"{module}")
    assert not offences, "\n".join(offences)


def test_the_import_graph_parser_sees_imports_inside_functions():
    """The graph test's own check: a function-level import is collected, with its line."""
    file = PACKAGE / "cli" / "commands.py"
    lines = {module for _, module in _imports(file)}
    assert "wsense.evaluation.trained" in lines and "wsense.serving.search" in lines


def test_default_yaml_equals_the_dataclass_defaults(monkeypatch):
    monkeypatch.delenv("WSENSE_DATA_DIR", raising=False)
    loaded, defaults = load_config().to_dict(), Config().to_dict()
    differing = {key: (loaded.get(key), defaults.get(key)) for key in set(loaded) | set(defaults)
                 if loaded.get(key) != defaults.get(key)}
    assert loaded == defaults, f"configs/default.yaml differs from wsense/config.py: {differing}"


def test_no_module_is_over_400_lines():
    """One job per file: a module past 400 lines is doing more than one."""
    long = {str(file.relative_to(PACKAGE.parent)): n for file in PACKAGE.rglob("*.py")
            if (n := len(file.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_no_html_css_or_javascript_in_python_strings():
    """The page and the contact sheet live in wsense/serving/templates and static/, none of them in Python."""
    markers = ["<div", "<html", "<script", "<style", "<p>", "{font-", "addEventListener", "querySelector"]
    found = [(file.relative_to(PACKAGE).as_posix(), marker) for file in sorted(PACKAGE.rglob("*.py"))
             for marker in markers if marker in file.read_text(encoding="utf-8")]
    assert not found
