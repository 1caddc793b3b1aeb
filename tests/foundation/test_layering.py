"""The package's import graph: no cycles, and the layers point one way (issue: a clean adapter boundary).

algo/ imports no SGLang and nothing above it; wire/ sits on algo/; runtime/ (scheduler) and serve/ (server
process) never import each other; lang/ (client) never imports runtime/; hooks.py is the only place joining them.
Module-level and function-level (deferred) imports both count.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "sglang_esamp"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path):
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module:
                yield target
            for a in node.names:   # "from . import forks" imports a module (a name resolves to its package)
                yield f"{target}.{a.name}"


def _graph():
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target in _imports(path):
            while target and target not in modules:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name and target != "sglang_esamp":
                deps.add(target)
        graph[name] = deps
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle_in_the_package():
    graph = _graph()
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)


FORBIDDEN = {
    "algo": {"wire", "runtime", "serve", "lang", "hooks", "plugin"},
    "wire": {"runtime", "serve", "lang", "hooks", "plugin"},
    "runtime": {"serve", "lang", "hooks", "plugin"},
    "serve": {"runtime", "lang", "hooks", "plugin"},
    "lang": {"runtime", "hooks", "plugin"},
}


def test_layers_point_one_way():
    bad = [(m, d) for m, deps in _graph().items() for d in deps if _layer(d) in FORBIDDEN.get(_layer(m), ())]
    assert not bad, bad


def test_algo_and_wire_import_no_sglang():
    for layer in ("algo", "wire"):
        for path in (PKG / layer).rglob("*.py"):
            assert not any(t == "sglang" or t.startswith("sglang.") for t in _imports(path)), path
