"""The package's shape: every module imports, no module reaches into another's private names,
the folders keep their layering, modules stay small, and the command tree lists every command."""
from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "ropetheory"
MODULES = sorted(".".join(("ropetheory",) + p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                 for p in ROOT.rglob("*.py"))
#: a module over this many lines does more than one job (the architecture issue's "about 400")
MAX_MODULE_LINES = 420
#: what each folder may import of the package (the layering its docstring states); "*" = anything
MAY_IMPORT = {
    "core": set(),
    "schedules": {"core"},
    "rope": {"core"},
    "spectra": {"core", "rope"},
    "theory": {"core", "rope", "schedules", "spectra", "store"},
    "store": {"core"},                      # the boundary's errors (core.errors)
    "flags": {"core"},                      # the boundary's errors (core.errors)
    "progress": set(),
    "figstyle": {"schedules"},              # the one table of schedule names (schedules.names, pure Python)
    "data": set(),
    "studies": {"*"},
    "models": {"core", "schedules", "rope", "spectra", "theory", "store", "flags", "progress", "data", "figstyle"},
    "training": {"core", "schedules", "rope", "spectra", "theory", "store", "flags", "progress", "models"},
    "cli": {"*"},
    "__main__": {"cli"},
}


def _path(mod: str) -> pathlib.Path:
    p = ROOT.joinpath(*mod.split(".")[1:])
    return p / "__init__.py" if p.is_dir() else p.with_suffix(".py")


def _imports(mod: str):
    """(target module, imported name or None, line) for every ``ropetheory`` import in ``mod``."""
    path = _path(mod)
    is_pkg = path.name == "__init__.py"
    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "ropetheory":
                continue
            for a in node.names:
                yield target, a.name, node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ropetheory"):
                    yield a.name, None, node.lineno


def _is_module(name: str) -> bool:
    p = ROOT.joinpath(*name.split(".")[1:])
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


@pytest.mark.parametrize("mod", MODULES)
def test_every_module_imports(mod):
    importlib.import_module(mod)


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for mod in MODULES:
        aliases = {}
        for target, name, line in _imports(mod):
            if name and name.startswith("_") and not name.startswith("__") and not _is_module(f"{target}.{name}"):
                bad.append(f"{mod}:{line} imports {target}.{name}")
        # attribute access on an imported package module: ``spectra._x``
        tree = ast.parse(_path(mod).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    aliases[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{mod}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def _layer(mod: str) -> str:
    return mod.split(".")[1] if mod != "ropetheory" else "ropetheory"


def test_folders_import_only_the_layers_below_them():
    bad = []
    for mod in MODULES:
        layer = _layer(mod)
        allowed = MAY_IMPORT.get(layer)
        if allowed is None or "*" in allowed:
            continue
        for target, name, line in _imports(mod):
            t = _layer(target if target != "ropetheory" or not name else f"ropetheory.{name}")
            if t not in allowed and t != layer:
                bad.append(
                    f"{mod}:{line} imports {target}{'.' + name if name else ''} ({layer} may import {sorted(allowed)})"
                )
    assert not bad, "\n".join(bad)


def test_every_folder_says_what_it_holds_and_may_import():
    for init in ROOT.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 120 and "import" in doc.lower(), init


@pytest.mark.parametrize("mod", MODULES)
def test_modules_stay_small(mod):
    n = len(_path(mod).read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{mod} has {n} lines"


def test_top_level_help_lists_every_command():
    from ropetheory.cli import STUDIES
    out = subprocess.run([sys.executable, "-m", "ropetheory.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in list(STUDIES) + ["verify", "schedule", "curve", "models"]:
        assert f"\n    {cmd}" in out.stdout, cmd
    bad = subprocess.run([sys.executable, "-m", "ropetheory.cli", "bogus"], capture_output=True, text=True)
    assert bad.returncode == 2
    for cmd in STUDIES:
        assert cmd in bad.stderr


def test_importing_the_package_sets_no_matplotlib_backend():
    src = "\n".join(_path(m).read_text() for m in MODULES)
    assert "matplotlib.use(" not in src
