"""Find uses of the private names of the libraries app/adapters wraps.

A use is: importing a private module or name of one of them; defining, or reading
through `self`/`super()`, a private name that a library class in the class's MRO
defines (an override, or the library's state); reading `obj._name` where `_name` is a
library's private name the template does not define itself; and the environ keys the
libraries pass between them. Docstrings and comments are not code: not counted.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from functools import cache
from pathlib import Path

LIBRARIES = ("socketio", "engineio", "gunicorn", "eventlet", "gevent", "jwt")
INTERNAL_STRINGS = {"gunicorn.socket", "eventlet.input"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_names(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, stored attributes and names."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {name for name in names if _private(name)}


@cache
def library_private_names() -> frozenset[str]:
    names: set[str] = set()
    for library in LIBRARIES:
        spec = importlib.util.find_spec(library)
        if spec is None:
            continue
        for path in Path(spec.origin).parent.rglob("*.py"):
            try:
                names |= _defined_names(ast.parse(path.read_text()))
            except (SyntaxError, UnicodeDecodeError):
                continue
    return frozenset(names)


def _is_library(cls: type) -> bool:
    return cls.__module__.split(".")[0] in LIBRARIES


@cache
def _class_private_names(cls: type) -> frozenset[str]:
    """Private names a library class defines: attributes, and what its methods store
    on `self`."""
    names = {name for name in vars(cls) if _private(name)}
    with contextlib.suppress(OSError, TypeError, SyntaxError):  # no source: a C type
        names |= _defined_names(ast.parse(inspect.getsource(cls)))
    return frozenset(names)


@dataclass(frozen=True)
class Use:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


class _Checker(ast.NodeVisitor):
    def __init__(self, path: str, module, own: set[str], classes: list[type]) -> None:
        self.path, self.module, self.own, self.all_classes = path, module, own, classes
        self.library_names = library_private_names()
        self.classes: list[frozenset[str]] = []  # per enclosing class: its libraries' names
        self.uses: list[Use] = []
        self.docstrings: set[int] = set()

    def found(self, node, what: str) -> None:
        self.uses.append(Use(self.path, node.lineno, what))

    def visit_Import(self, node):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] in LIBRARIES and any(_private(p) for p in parts):
                self.found(node, f"import {alias.name}")

    def visit_ImportFrom(self, node):
        parts = (node.module or "").split(".")
        if parts[0] in LIBRARIES:
            for alias in node.names:
                if any(_private(p) for p in parts) or _private(alias.name):
                    self.found(node, f"from {node.module} import {alias.name}")

    def _library_names_of(self, node: ast.ClassDef) -> frozenset[str]:
        """The private names of the library classes in this class's MRO, and in the
        MRO of every class it is a mixin of."""
        cls = getattr(self.module, node.name, None) if self.module is not None else None
        if not isinstance(cls, type):
            return frozenset()
        users = [cls] + [other for other in self.all_classes if cls in other.__mro__[1:]]
        names: set[str] = set()
        for user in users:
            for base in user.__mro__:
                if _is_library(base):
                    names |= _class_private_names(base)
        return frozenset(names)

    def visit_ClassDef(self, node):
        self.classes.append(self._library_names_of(node))
        for child in node.body:
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and child.name in self.classes[-1]:
                self.found(child, f"def {child.name} (overrides a library's private method)")
            if isinstance(child, ast.Assign):
                for target in child.targets:
                    if isinstance(target, ast.Name) and target.id in self.classes[-1]:
                        self.found(child, f"{target.id} = (a library's private attribute)")
        self.generic_visit(node)
        self.classes.pop()

    def visit_Attribute(self, node):
        name = node.attr
        if _private(name):
            through_self = (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")) \
                or (isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                    and node.value.func.id == "super")
            if through_self:
                if self.classes and name in self.classes[-1]:
                    self.found(node, f"{ast.unparse(node)} (a library's private name)")
            elif name in self.library_names and name not in self.own:
                self.found(node, f"{ast.unparse(node)} (a library's private name)")
        self.generic_visit(node)

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr", "setattr") \
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
            name = node.args[1].value
            if isinstance(name, str) and _private(name) and name in self.library_names \
                    and name not in self.own:
                self.found(node, f"{node.func.id}(..., {name!r}) (a library's private name)")
        self.generic_visit(node)

    def visit_Constant(self, node):
        if node.value in INTERNAL_STRINGS and id(node) not in self.docstrings:
            self.found(node, f"{node.value!r} (an environ key the libraries pass between them)")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            ids.add(id(node.body[0].value))
    return ids


def uses_in(files: dict[str, str], modules: dict[str, object] | None = None) -> list[Use]:
    """The uses in `files` ({path: source}); `modules` ({path: imported module}) lets
    classes be resolved to their MRO."""
    trees = {path: ast.parse(text) for path, text in files.items()}
    modules = modules or {}
    classes = [value for module in modules.values() for value in vars(module).values()
               if isinstance(value, type) and value.__module__ == module.__name__]
    # The template's own private names, which `obj._name` may mean: not those it defines
    # only to override a library's (found in a first pass).
    own = set().union(*(_defined_names(tree) for tree in trees.values())) if trees else set()
    for _ in range(2):
        uses = []
        for path, tree in trees.items():
            checker = _Checker(path, modules.get(path), own, classes)
            checker.docstrings = _docstrings(tree)
            checker.visit(tree)
            uses += checker.uses
        own -= {use.what.split()[1] for use in uses if use.what.startswith("def ")}
    return uses


def uses_in_tree(root: Path, folders: tuple[str, ...], skip: str) -> list[Use]:
    """The uses in the Python files under `folders` of `root`, except under `skip`."""
    files, modules = {}, {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")) if (root / folder).is_dir() \
                else [root / folder]:
            relative = path.relative_to(root).as_posix()
            if relative.startswith(skip):
                continue
            files[relative] = path.read_text()
            if relative.startswith("app/"):
                name = relative[:-3].replace("/", ".").removesuffix(".__init__")
                modules[relative] = importlib.import_module(name)
    return uses_in(files, modules)
