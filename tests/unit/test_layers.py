"""The layout's rules, read from the source with ``ast``: which modules may import the Docker SDK
and SQLModel, no import cycles, and no import that climbs the layers.

Every import counts: at module level, inside functions (a lazy import is still a dependency)
and under ``if TYPE_CHECKING:``. Each rule reports the offending imports as ``file:line``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import snapvol

ROOT = Path(snapvol.__file__).parent


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module, dotted: snapvol.volume.guard
    target: str  # the imported module, dotted and absolute: snapvol.pg.cluster, docker.errors
    where: str  # file:line, the file relative to the package's parent: snapvol/volume/guard.py:20

    def __str__(self) -> str:
        return f"{self.where}: {self.importer} imports {self.target}"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package in directory ``root``, by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name a relative import (``from .x import y``, ``level`` dots) refers to."""
    if level == 0:
        return module or ""
    package = importer.split(".")
    if not is_package:
        package.pop()  # a module's relative imports start from its package
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, known: Iterable[str]) -> Iterator[Import]:
    """Every import in the module, each resolved to the most precise module it names:
    ``from snapvol.pg import cluster`` is an import of ``snapvol.pg.cluster`` when that is a
    module, and of ``snapvol.pg`` when ``cluster`` is a name defined there."""
    known = set(known)
    tree = ast.parse(path.read_text(), filename=str(path))
    file = "/".join(name.split(".")) + ("/__init__.py" if path.name == "__init__.py" else ".py")
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, f"{file}:{node.lineno}")
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            base = _resolve(name, is_package, node.level, node.module)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in known else base
                yield Import(name, target, f"{file}:{node.lineno}")


def all_imports(root: Path = ROOT) -> list[Import]:
    found = modules(root)
    return [imp for name, path in found.items() for imp in imports_of(name, path, found)]


def within(target: str, *prefixes: str) -> bool:
    """Whether module ``target`` is one of ``prefixes`` or inside one of them."""
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def report(offending: Iterable[Import]) -> str:
    return "\n".join(str(imp) for imp in offending)


def only_imported_by(imports: Iterable[Import], libraries: tuple[str, ...], allowed: str) -> str:
    return report(i for i in imports if within(i.target, *libraries) and i.importer != allowed)


@dataclass(frozen=True)
class Cycle:
    modules: list[str]  # every module of a group that import each other, directly or not
    chain: list[Import]  # the shortest chain of imports that closes a loop through the first

    def __str__(self) -> str:
        loop = " -> ".join([self.chain[0].importer, *(i.target for i in self.chain)])
        others = sorted(set(self.modules) - {i.importer for i in self.chain})
        tangled = f" (tangled with it: {', '.join(others)})" if others else ""
        return f"{loop}{tangled}\n{report(self.chain)}"


def cycles(imports: Iterable[Import]) -> list[Cycle]:
    """One cycle per strongly connected group of snapvol modules that import each other,
    directly or through others."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if within(imp.target, "snapvol") and imp.target != imp.importer:
            edges.setdefault(imp.importer, {}).setdefault(imp.target, imp)
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return [
        Cycle(sorted(group), _cycle_in(sorted(group)[0], group, edges))
        for group in sorted(groups, key=min)
    ]


def _cycle_in(start: str, group: set[str], edges: dict[str, dict[str, Import]]) -> list[Import]:
    """The shortest chain of imports from ``start`` back to itself inside ``group``."""
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child, imp in sorted(edges.get(node, {}).items()):
                if child == start:
                    return [*paths[node], imp]
                if child in group and child not in paths:
                    paths[child] = [*paths[node], imp]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group has one


def describe_cycles(found: list[Cycle]) -> str:
    return "\n\n".join(str(cycle) for cycle in found)


# The small pieces every layer may use; they use none of the layers.
SHARED = tuple(
    f"snapvol.{name}" for name in ("errors", "output", "names", "runtime", "locking", "background")
)
# Lower layers: what they must not import.
ABOVE_ADAPTERS_AND_PIPELINE = ("snapvol.pg", "snapvol.volume", "snapvol.cli")
ABOVE_SHARED = ("snapvol.pg", "snapvol.volume", "snapvol.cli", "snapvol.adapters.store")
# The command line is the top; only the entry point (``python -m snapvol``) stands above it.
ENTRY_POINT = "snapvol.__main__"


def climbs(imp: Import) -> bool:
    """Whether the import climbs the layers."""
    if not within(imp.target, "snapvol") or within(imp.importer, imp.target):
        return False  # a library, or a package's own ``__init__``
    if within(imp.target, "snapvol.cli"):
        return not within(imp.importer, "snapvol.cli", ENTRY_POINT)
    if within(imp.importer, "snapvol.adapters", "snapvol.pipeline"):
        return within(imp.target, *ABOVE_ADAPTERS_AND_PIPELINE)
    if within(imp.importer, *SHARED):
        return within(imp.target, *ABOVE_SHARED)
    return False


def climbing(imports: Iterable[Import]) -> list[Import]:
    return [imp for imp in imports if climbs(imp)]


# --- the rules, on snapvol itself -----------------------------------------------------------


IMPORTS = all_imports()


def test_every_module_is_read() -> None:
    names = modules()
    assert {"snapvol.adapters.engine", "snapvol.adapters.store", "snapvol.cli"} <= set(names)
    assert len(names) == len(list(ROOT.rglob("*.py")))
    importers = {imp.importer for imp in IMPORTS}
    assert "snapvol.volume.guard" in importers and "snapvol.cli.restore" in importers


def test_docker_sdk_only_in_the_engine_adapter() -> None:
    offending = only_imported_by(IMPORTS, ("docker",), "snapvol.adapters.engine")
    assert not offending, f"only snapvol/adapters/engine.py may import docker:\n{offending}"


def test_kubernetes_client_only_in_the_kube_adapter() -> None:
    offending = only_imported_by(IMPORTS, ("kubernetes",), "snapvol.kube.client")
    assert not offending, f"only snapvol/kube/client.py may import kubernetes:\n{offending}"


def test_sqlmodel_only_in_the_store_adapter() -> None:
    offending = only_imported_by(IMPORTS, ("sqlmodel", "sqlalchemy"), "snapvol.adapters.store")
    assert not offending, (
        f"only snapvol/adapters/store.py may import sqlmodel or sqlalchemy:\n{offending}"
    )


def test_no_import_cycles() -> None:
    found = cycles(IMPORTS)
    assert not found, f"import cycles among snapvol modules:\n{describe_cycles(found)}"


def test_layers_do_not_climb() -> None:
    offending = report(climbing(IMPORTS))
    assert not offending, (
        "imports that climb the layers (cli on top; pg and volume; adapters and pipeline; "
        f"the shared modules at the bottom):\n{offending}"
    )


# --- the checker itself, on small packages written here ---------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "snapvol"
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def imports_in(tmp_path: Path, files: dict[str, str]) -> list[Import]:
    return all_imports(write_package(tmp_path, files))


def targets(imports: Iterable[Import], importer: str) -> set[str]:
    return {imp.target for imp in imports if imp.importer == importer}


def test_every_kind_of_import_is_found(tmp_path: Path) -> None:
    found = imports_in(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "pg/__init__.py": "from . import cluster\n",
            "pg/cluster.py": "X = 1\n",
            "pg/logical.py": (
                "from __future__ import annotations\n"
                "import docker.errors\n"
                "from typing import TYPE_CHECKING\n"
                "from . import cluster\n"
                "from .cluster import X\n"
                "from .. import errors\n"
                "from ..pg import cluster as c\n"
                "if TYPE_CHECKING:\n"
                "    from snapvol.volume import guard\n"
                "def f():\n"
                "    import sqlmodel\n"
                "    from snapvol.pg import X\n"
            ),
            "volume/__init__.py": "",
            "volume/guard.py": "",
        },
    )
    assert targets(found, "snapvol.pg.logical") == {
        "docker.errors",
        "typing",
        "snapvol.pg.cluster",
        "snapvol.errors",
        "snapvol.volume.guard",
        "sqlmodel",
        "snapvol.pg",  # X is a name in snapvol/pg/__init__.py, not a module
    }
    assert targets(found, "snapvol.pg") == {"snapvol.pg.cluster"}
    lazy = [i for i in found if i.target == "sqlmodel"]
    assert [i.where for i in lazy] == ["snapvol/pg/logical.py:11"]


def test_the_library_rules_name_the_offending_import(tmp_path: Path) -> None:
    found = imports_in(
        tmp_path,
        {
            "adapters/engine.py": "import docker\n",
            "adapters/store.py": "from sqlmodel import Field\nimport sqlalchemy.exc\n",
            "volume/guard.py": "def f():\n    from docker.errors import NotFound\n",
            "pg/cluster.py": "import sqlalchemy\n",
        },
    )
    assert only_imported_by(found, ("docker",), "snapvol.adapters.engine") == (
        "snapvol/volume/guard.py:2: snapvol.volume.guard imports docker.errors"
    )
    assert only_imported_by(found, ("sqlmodel", "sqlalchemy"), "snapvol.adapters.store") == (
        "snapvol/pg/cluster.py:1: snapvol.pg.cluster imports sqlalchemy"
    )
    assert not only_imported_by(found, ("dock",), "snapvol.adapters.engine")  # no prefix match


def test_a_cycle_through_a_lazy_import_is_reported(tmp_path: Path) -> None:
    found = imports_in(
        tmp_path,
        {
            "volume/guard.py": "from snapvol.volume.watchdog import spawn\n",
            "volume/watchdog.py": (
                "def _recover():\n    from snapvol.volume import restore, snapshot\n"
            ),
            "volume/restore.py": "from snapvol.volume import guard\nfrom snapvol import errors\n",
            "volume/snapshot.py": "from snapvol.volume.guard import stopped\n",
            "errors.py": "",
            "a.py": "import snapvol.b\n",
            "b.py": "from . import a\n",
        },
    )
    assert describe_cycles(cycles(found)) == (
        "snapvol.a -> snapvol.b -> snapvol.a\n"
        "snapvol/a.py:1: snapvol.a imports snapvol.b\n"
        "snapvol/b.py:1: snapvol.b imports snapvol.a\n"
        "\n"
        "snapvol.volume.guard -> snapvol.volume.watchdog -> snapvol.volume.restore -> "
        "snapvol.volume.guard (tangled with it: snapvol.volume.snapshot)\n"
        "snapvol/volume/guard.py:1: snapvol.volume.guard imports snapvol.volume.watchdog\n"
        "snapvol/volume/watchdog.py:2: snapvol.volume.watchdog imports snapvol.volume.restore\n"
        "snapvol/volume/restore.py:1: snapvol.volume.restore imports snapvol.volume.guard"
    )
    without = [i for i in found if i.importer != "snapvol.volume.watchdog"]
    assert [c.modules for c in cycles(without)] == [["snapvol.a", "snapvol.b"]]


def test_climbing_imports_are_reported(tmp_path: Path) -> None:
    found = imports_in(
        tmp_path,
        {
            "__main__.py": "from snapvol.cli import main\n",
            "cli/__init__.py": "from snapvol.cli import context\nfrom snapvol.pg import logical\n",
            "cli/context.py": "from snapvol.adapters import store\n",
            "pg/__init__.py": "",
            "pg/logical.py": "from snapvol.cli import context\nfrom snapvol.volume import guard\n",
            "volume/guard.py": "from snapvol.adapters import engine\nfrom snapvol import locking\n",
            "adapters/engine.py": "from snapvol import errors\n",
            "adapters/store.py": "from snapvol.pipeline import tarscan\nfrom snapvol import pg\n",
            "pipeline/tarscan.py": "def f():\n    from snapvol.volume.guard import X\n",
            "errors.py": "",
            "locking.py": (
                "from snapvol.adapters.engine import E\nfrom snapvol.adapters import store\n"
            ),
            "output.py": "from snapvol import errors\n",
        },
    )
    assert report(climbing(found)) == "\n".join(
        [
            "snapvol/adapters/store.py:2: snapvol.adapters.store imports snapvol.pg",
            "snapvol/locking.py:2: snapvol.locking imports snapvol.adapters.store",
            "snapvol/pg/logical.py:1: snapvol.pg.logical imports snapvol.cli.context",
            "snapvol/pipeline/tarscan.py:2: snapvol.pipeline.tarscan imports snapvol.volume.guard",
        ]
    )
