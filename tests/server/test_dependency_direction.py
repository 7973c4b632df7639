"""Imports point one way: ``server → engine → engine/backends → kernels``; ``models``/``configs``
are leaves. ``server`` imports only the engine's facade (``engine.__all__``), with the heavy
libraries unavailable; nothing imports ``server``; no module cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

BLOCKED = ["llama_cpp", "torch", "vllm", "faiss", "sentence_transformers", "transformers"]


def test_server_imports_without_heavy_libraries():
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None  # any import of it now raises ImportError\n"
        "import server.app, server.cli, engine, engine.backends.base\n"
        "from configs import load_settings\n"
        "app = server.app.create_app(load_settings('test'))\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ---- the import graph, read from the source (no import runs) --------------------------------

PACKAGES = ("server", "engine", "models", "configs", "kernels")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import in ``path``, relative ones resolved;
    imports under ``if TYPE_CHECKING:`` count too (a dependency for the types is one all the
    same)."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = (package or _module_name(path)).split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                found.append((base, top))
                found.extend((f"{base}.{a.name}", top) for a in child.names)
            visit(child, nested)

    visit(tree, True)
    return found


def _sources() -> dict[str, Path]:
    return {
        _module_name(p): p
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def test_server_imports_only_the_engine_facade() -> None:
    wrong = [
        f"{name} imports {target}"
        for name, path in _sources().items()
        if name.startswith("server")
        for target, _ in _imports(path)
        if target.startswith("engine.") and not _in_facade(target)
    ]
    assert not wrong, "server must import from `engine` only:\n" + "\n".join(wrong)


def _in_facade(target: str) -> bool:
    """``from engine import X`` shows up as the module ``engine.X``; X must be in __all__."""
    import engine

    return target.split(".")[1] in engine.__all__ and target.count(".") == 1


def test_nothing_below_the_server_imports_it() -> None:
    wrong = [
        f"{name} imports {target}"
        for name, path in _sources().items()
        if not name.startswith("server")
        for target, _ in _imports(path)
        if target == "server" or target.startswith("server.")
    ]
    assert not wrong, "\n".join(wrong)


def test_leaves_import_no_engine_or_server() -> None:
    wrong = [
        f"{name} imports {target}"
        for name, path in _sources().items()
        if name.split(".")[0] in ("models", "configs", "kernels")
        for target, _ in _imports(path)
        if target.split(".")[0] in ("engine", "server")
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules() -> None:
    """A module-level or deferred import of A by B and of B by A (directly or through others)
    is a cycle; packages' ``__init__`` re-exports are not counted as edges into the package."""
    sources = _sources()
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        edges = set()
        for target, _ in _imports(path):
            while target and target not in sources:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    # Facades (a package's __init__) only re-export: skip them as cycle members.
    facades = {n for n, p in sources.items() if p.name == "__init__.py"}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in facades:
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in facades and node not in state:
            dfs(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
