import ast
import subprocess
import sys
from pathlib import Path

import ecco_core

FRONT_END = ("IPython", "anywidget", "altair", "ecco_adapters")


def test_core_imports_no_front_end_package() -> None:
    code = (
        "import sys, ecco_core\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FRONT_END!r}]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_core_source_never_names_front_end_or_template_packages() -> None:
    # transformers itself imports jinja2 (chat templates); the core's own code must not.
    banned = {*FRONT_END, "jinja2"}
    for path in Path(ecco_core.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & banned, f"{path.name} imports {names}"


def test_version_comes_from_package_metadata() -> None:
    import importlib.metadata

    assert ecco_core.__version__ == importlib.metadata.version("ecco-core")


COMPUTE = ("generation", "lens", "neurons", "attribution", "attention")


def _core_imports(path: Path, root: Path) -> set[str]:
    """First-level ecco_core module names that ``path`` imports (relative or absolute)."""
    package = path.relative_to(root).parts[:-1]  # () for ecco_core/x.py
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = list(package[: len(package) - (node.level - 1)])
            parts = base + (node.module.split(".") if node.module else [])
            names = [parts] if node.module else [[*base, a.name] for a in node.names]
        elif node.module and node.module.split(".")[0] == "ecco_core":
            names = [node.module.split(".")[1:]]
        else:
            continue
        found |= {n[0] for n in names if n}
    return found


def test_compute_modules_never_import_each_other() -> None:
    """docs/architecture.md: what compute modules share lives below them."""
    root = Path(ecco_core.__file__).parent
    for path in root.rglob("*.py"):
        own = path.relative_to(root).parts[0].removesuffix(".py")
        if own not in COMPUTE:
            continue
        sideways = (_core_imports(path, root) & set(COMPUTE)) - {own}
        assert not sideways, f"{path.relative_to(root)} imports {sorted(sideways)}"
