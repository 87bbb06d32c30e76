"""The package's shape: layered subpackages without cycles, a thin CLI, tests that mirror it.

The layers contract itself is import-linter's (``make lint``, pyproject.toml
``[tool.importlinter]``); these tests keep the rest of the house rules checkable.
"""

from __future__ import annotations

import ast
import tomllib

from conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "itsm_core"


def _graph() -> dict[str, set[str]]:
    import grimp

    graph = grimp.build_graph("itsm_core")
    modules = set(graph.modules)
    return {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}


def _cycles(adj: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(adj):
        if root in index:
            continue
        work = [(root, iter(sorted(adj[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(adj[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_the_package_is_in_an_import_cycle():
    """Imports inside functions count too (grimp reads every import statement)."""
    assert _cycles(_graph()) == []


def test_the_layers_contract_names_every_subpackage():
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = config["contracts"][0]["layers"]
    named = {name.strip().removeprefix("itsm_core.") for layer in layers
             for name in layer.split("|")}
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert named == subpackages


def test_cli_functions_are_short():
    """Commands parse options, call one library function and render: no long functions."""
    too_long = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                body = node.end_lineno - node.body[0].lineno + 1  # without the signature
                if body > 30:
                    too_long.append(f"{path.name}:{node.name} ({body} lines)")
    assert not too_long


def test_tests_mirror_the_package():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    test_dirs = {p.name for p in (PROJECT_ROOT / "tests").iterdir()
                 if p.is_dir() and any(p.glob("test_*.py"))}
    assert subpackages <= test_dirs, subpackages - test_dirs


def test_public_entry_points_have_docstrings():
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        if path.name != "__init__.py" and not ast.get_docstring(tree):
            missing.append(f"{path.relative_to(PROJECT_ROOT)} (module)")
    assert not missing
