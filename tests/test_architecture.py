"""The import rules of docs/ARCHITECTURE.md, checked on the source (no import side effects).

- ``baize_convert`` (the ``convert/`` directory) may import from ``baize_tui`` only its core
  modules (:data:`CORE`), which import nothing else from ``baize_tui`` and never
  ``baize_convert``: so the dependency runs one way, core <- converter <- application.
- The application imports ``baize_convert`` only inside functions: importing any
  ``baize_tui`` module never loads the converter.
- Engines, storage, self-chat, training, models and the converter never import Textual.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = {"baize_tui", "baize_tui.errors", "baize_tui.prompt", "baize_tui.gguf_header",
        "baize_tui.formatting", "baize_tui.catalog", "baize_tui.procs", "baize_tui.redact",
        "baize_tui.faults", "baize_tui.safe_write", "baize_tui.termtext"}
NO_TEXTUAL = ("baize_tui.engines", "baize_tui.history", "baize_tui.selfchat", "baize_tui.train",
              "baize_tui.models", "baize_convert")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "convert":
        parts[0] = "baize_convert"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    files = list((ROOT / "baize_tui").rglob("*.py")) + list((ROOT / "convert").rglob("*.py"))
    return {_module_name(p): p for p in files}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    for node in tree.body:  # imports under a module-level `if`/`try` are module level too
        if isinstance(node, (ast.If, ast.Try)):
            top.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, id(node) in top))
            found += [(f"{node.module}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def _is(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _target(imported: str, modules: dict[str, Path]) -> str:
    """The module an import loads (``from pkg import name`` loads ``pkg``, or ``pkg.name``)."""
    return imported if imported in modules else imported.rsplit(".", 1)[0]


def test_the_converter_uses_only_the_core_of_baize_tui() -> None:
    modules = _modules()
    bad = [f"{name} imports {imported}"
           for name, path in modules.items() if _is(name, "baize_convert")
           for imported, _ in _imports(path)
           if _is(imported, "baize_tui") and _target(imported, modules) not in CORE]
    assert not bad, "the converter may import only baize_tui's core modules " \
        f"({', '.join(sorted(CORE))}); see docs/ARCHITECTURE.md: {bad}"


def test_the_core_imports_neither_the_application_nor_the_converter() -> None:
    modules = _modules()
    bad = []
    for name in CORE:
        for imported, _ in _imports(modules[name]):
            module = _target(imported, modules)
            if _is(module, "baize_convert") or (_is(module, "baize_tui") and module not in CORE):
                bad.append(f"{name} imports {imported}")
    assert not bad, bad


def test_the_application_loads_the_converter_only_when_it_runs_it() -> None:
    modules = _modules()
    bad = [f"{name} imports {imported} at module level"
           for name, path in modules.items() if _is(name, "baize_tui")
           for imported, top in _imports(path) if top and _is(imported, "baize_convert")]
    assert not bad, bad
    names = sorted(n for n in modules if _is(n, "baize_tui") and not n.endswith("__main__")
                   and n != "baize_tui.train.worker")
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('baize_convert')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"importing baize_tui loaded {out.stdout.strip()}"


def test_headless_packages_never_import_textual() -> None:
    bad = [f"{name} imports {imported}"
           for name, path in _modules().items() if any(_is(name, p) for p in NO_TEXTUAL)
           for imported, _ in _imports(path) if _is(imported, "textual")]
    assert not bad, bad
