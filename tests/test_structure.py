"""The layout's rules, read from the source: what imports what, and which modules may name LRDif."""

import ast
from pathlib import Path

from udcbench.methods import get_method, method_names

from conftest import REPO

PACKAGE = REPO / "udcbench"


def _modules(*paths: Path) -> list[Path]:
    return sorted(f for p in paths for f in ([p] if p.suffix == ".py" else p.rglob("*.py")))


def _imports(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names anywhere in the file (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _strings(path: Path) -> set[str]:
    """The string constants of a file's code, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


def test_the_methods_and_the_config_do_not_import_the_engine():
    for path in _modules(PACKAGE / "methods", PACKAGE / "config.py"):
        engine = sorted(name for name in _imports(path) if name.startswith("udcbench.engine"))
        assert not engine, f"{path.relative_to(REPO)} imports {engine}"


def test_the_method_packages_import_neither_the_cli_nor_the_engine():
    for path in _modules(REPO / "degradations", REPO / "baselines", REPO / "lrdif"):
        inward = sorted(n for n in _imports(path) if n.startswith(("udcbench.cli", "udcbench.engine")))
        assert not inward, f"{path.relative_to(REPO)} imports {inward}"


def test_engine_cli_and_reproduce_name_no_lrdif_method_variant_or_stage():
    lrdif = {name for name in method_names() if get_method(name).build.__module__ == "udcbench.methods.lrdif"}
    assert {"lrdif", "lrdif-s1", "lrdif-s2-v1"} <= lrdif  # the test sees the family
    words = lrdif | {"s1", "s2-v1", "s2-v2", "s2-v3", "s2-v4", "LRDIF_ARGS"}
    for path in _modules(PACKAGE / "engine", PACKAGE / "cli", PACKAGE / "reproduce.py"):
        named = sorted(s for s in _strings(path) if s in words or any(w in s.split() for w in words))
        assert not named, f"{path.relative_to(REPO)} names {named}"
        assert not any(n.startswith("udcbench.methods.lrdif") or n.endswith("LRDIF_ARGS") for n in _imports(path))


def test_the_licence_and_the_citation_file_match_the_package():
    import yaml

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the tomli backport, a dependency there
        import tomli as tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    licence = (REPO / "LICENSE").read_text()
    assert project["license"] == "Apache-2.0" and "Apache License" in licence and "Version 2.0" in licence
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors", "version", "license"} <= set(citation)
    assert citation["version"] == project["version"] and citation["license"] == project["license"]
    assert "2402.00250" in citation["references"][0]["identifiers"][0]["value"]  # the paper it reproduces
