"""The packages' import graphs, read from the source (module-level and function-level imports alike).

No cycles among ``spectra_rec`` modules nor among ``fusion`` modules, no RecBole or ``fusion`` import
anywhere in ``spectra_rec``, and no module (of either package, the benchmarks, the tests or
``run_fusion.py``) imports another module's private (underscore) names.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "spectra_rec"
PACKAGES = (PACKAGE, "fusion")
"""The distribution's two packages: their private names stay inside the module that defines them."""
CLIENTS = ("benchmarks", "tests")
"""Folders outside the packages whose files must use only the packages' public names (as must ``run_fusion.py``)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str = PACKAGE) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def _all_modules() -> dict[str, Path]:
    """Every module of both packages (the targets a private name can be read from)."""
    return {m: p for package in PACKAGES for m, p in _modules(package).items()}


def _client_files() -> dict[str, Path]:
    """Every Python file of the benchmarks, the tests and ``run_fusion.py``, by module name."""
    files = [p for folder in CLIENTS for p in sorted((ROOT / folder).rglob("*.py"))] + [ROOT / "run_fusion.py"]
    return {_module_name(p): p for p in files}


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _imports(name: str, path: Path, modules) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import statement in the file.

    ``from pkg import sub`` counts as importing the module ``pkg.sub`` when that is a module.
    A package's implicit import of its ``__init__`` is not an edge (every tool reads it so).
    """
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if target == "__future__":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None, node.lineno) if sub in modules else (target, a.name, node.lineno))
    return out


def import_graph(package: str = PACKAGE) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports."""
    modules = _modules(package)
    return {m: {t for t, _, _ in _imports(m, p, modules) if t in modules and t != m} for m, p in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def test_the_scanner_sees_function_level_imports_and_cycles():
    graph = import_graph()
    assert "spectra_rec.probe.backends.hf" in graph["spectra_rec.probe.backends"]  # imported inside make_backend
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles_among_a_packages_modules(package):
    cycles = find_cycles(import_graph(package))
    assert cycles == [], f"import cycles: {cycles}"


@pytest.mark.parametrize("forbidden", ["recbole", "fusion"])
def test_spectra_rec_never_imports(forbidden):
    modules = _modules()
    hits = [f"{m}:{line} imports {t}" for m, p in modules.items() for t, _, line in _imports(m, p, modules)
            if t == forbidden or t.startswith(forbidden + ".")]
    assert hits == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(name: str, path: Path, modules) -> list[str]:
    """Another package module's private names this module reaches: imported by name, a private
    module imported, or read as an attribute of an imported module (``artifacts._helper``)."""
    hits = []
    for target, what, line in _imports(name, path, modules):
        if not any(target == p or target.startswith(p + ".") for p in PACKAGES) or target == name:
            continue
        if any(_private(part) for part in target.split(".")) or (what is not None and _private(what)):
            hits.append(f"{name}:{line} imports {target}{'.' + what if what else ''}")
    bound = {}  # local name -> the package module it is bound to
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            bound |= {a.asname: a.name for a in node.names if a.asname and a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module:
            bound |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                      if f"{node.module}.{a.name}" in modules}
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound \
                and _private(node.attr) and bound[node.value.id] != name:
            hits.append(f"{name}:{node.lineno} reads {bound[node.value.id]}.{node.attr}")
    return hits


def test_private_name_scanner_sees_each_form(tmp_path):
    src = tmp_path / "spectra_rec" / "m.py"
    src.parent.mkdir()
    src.write_text("from spectra_rec import artifacts\nfrom spectra_rec.metrics._validate import x\n"
                   "from spectra_rec.probe.run import _rows, cohort\nartifacts._json_default\nartifacts.write_json\n")
    modules = {"spectra_rec.artifacts", "spectra_rec.m", "spectra_rec.probe.run"}
    hits = private_uses("spectra_rec.m", src, modules)
    assert hits == ["spectra_rec.m:2 imports spectra_rec.metrics._validate.x",
                    "spectra_rec.m:3 imports spectra_rec.probe.run._rows",
                    "spectra_rec.m:4 reads spectra_rec.artifacts._json_default"]


def test_private_name_scanner_sees_fusion_and_client_files(tmp_path):
    src = tmp_path / "tests" / "fusion" / "test_x.py"
    src.parent.mkdir(parents=True)
    src.write_text("from fusion import backbones as bb\nfrom fusion.backbones import _recbole_config\n"
                   "bb._resolved_yaml\nbb.resolved_yaml\nfrom tests.e2e.test_resume import _env\n")
    modules = {"fusion", "fusion.backbones", "tests.fusion.test_x"}
    hits = private_uses("tests.fusion.test_x", src, modules)
    assert hits == ["tests.fusion.test_x:2 imports fusion.backbones._recbole_config",
                    "tests.fusion.test_x:3 reads fusion.backbones._resolved_yaml"]
    assert set(_client_files()) >= {"run_fusion", "benchmarks.profile_backbone", "tests.repo.test_import_graph"}
    assert "fusion.wrapper" in _all_modules()


def test_no_module_uses_another_modules_private_names():
    modules = _all_modules()
    files = modules | _client_files()
    hits = [h for m, p in files.items() for h in private_uses(m, p, modules)]
    assert hits == [], "\n".join(hits)
