"""Result-affecting code: which of pedtune's modules can change a stage's results, derived from its imports.

Per stage, two sets of modules, both read from the import statements of ``pedtune.stages.<stage>``
(walked with :mod:`ast`, so nothing is imported to compute them):

- :func:`output_code`: every module the stage module reaches, which can change the files the
  stage writes. dvc.yaml lists exactly these files as the stage's code deps (``pedtune dvc-deps``
  writes them; a test checks the committed dvc.yaml against them).
- :func:`computation_code`: the modules that can change what one training run computes, reached
  from the stage's ``COMPUTATION_ROOTS``: a subset of the first. The tune stage's sweep identity
  hashes these (:func:`fingerprint`), so a fix to the sweep driver, its reports or its tracking
  still resumes an interrupted sweep.

:func:`study_code` joins the first set over the stages of a study (fetch to evaluate): the files
a published study's provenance hashes (:func:`code_hashes`), so that README's Results can say
which of them changed since (:mod:`pedtune.published`).

Neither set follows an import into a module of ``NOT_RESULTS``: output that only a person reads
(console lines, progress and ETA, rendered docs). ``RUN_MECHANICS`` leaves only the second set:
code that decides where and how runs execute, are stored and logged, never what they compute.
Both lists are reviewed by hand; a module added to either needs the reason beside it.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "pedtune"
STAGES = ("fetch", "weights", "split", "train", "tune", "evaluate", "record", "compare")
STUDY_STAGES = ("fetch", "weights", "split", "train", "tune", "evaluate")  # what `dvc repro` runs for a study

NOT_RESULTS: dict[str, str] = {
    "pedtune.cli": "argument parsing and error messages; each stage runs from its own module",
    "pedtune.console": "log lines, progress bars and the closing summary",
    "pedtune.engine.estimate": "the time estimate and the CPU guard, run before a stage starts",
    "pedtune.tune.progress": "the sweep's progress lines and ETA",
    "pedtune.evaluate.readme": "renders README.md's Results section from the report",
    "pedtune.config.reference": "renders docs/params.md from the schema",
}
RUN_MECHANICS: dict[str, str] = {
    "pedtune.ray_cluster": "connects to Ray and checks capacity before runs are placed",
    "pedtune.tune.storage": "where the sweep's state and checkpoints are kept",
    "pedtune.tracking": "MLflow runs, params and tags (and every module under it)",
}
# Where each stage's runs start: what a run computes is reached from these, not from the driver.
COMPUTATION_ROOTS: dict[str, tuple[str, ...]] = {
    "train": ("pedtune.engine.train", "pedtune.stages.inputs"),
    # a trial: the trainable, how a drawn sample becomes its config, the inputs every trial shares
    "tune": ("pedtune.tune.trainable", "pedtune.tune.space", "pedtune.stages.inputs"),
    "evaluate": ("pedtune.evaluate.runs", "pedtune.stages.inputs"),
    "record": ("pedtune.engine.train", "pedtune.stages.inputs"),
}


def package_root() -> Path:
    """The folder of the ``pedtune`` package (src/pedtune in a checkout)."""
    return Path(__file__).resolve().parent


def module_file(name: str, root: Path) -> Path | None:
    """The source file of module ``name`` under ``root`` (the package's folder), or None if none is there."""
    parts = name.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _listed(name: str, listing: Iterable[str]) -> bool:
    return any(name == entry or name.startswith(entry + ".") for entry in listing)


def imported_modules(name: str, root: Path) -> set[str]:
    """The pedtune modules ``name`` imports (at any depth of its code, but not under ``TYPE_CHECKING``),
    with the packages whose ``__init__`` each import runs."""
    path = module_file(name, root)
    if path is None:
        return set()
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, is_package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # kept below only if a module
    own = {module for module in found if module.split(".")[0] == PACKAGE and module_file(module, root) is not None}
    return own | {parent for module in own for parent in _parents(module)}


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:`` blocks (imports for type checkers only)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def reachable(roots: Iterable[str], root: Path, stop: Iterable[str]) -> set[str]:
    """The modules ``roots`` reach through imports, not entering (nor listing) any module in ``stop``."""
    stop = tuple(stop)
    seen: set[str] = set()
    todo = [module for module in roots if not _listed(module, stop)]
    for module in todo:
        todo.extend(_parents(module))
    while todo:
        module = todo.pop()
        if module in seen or _listed(module, stop):
            continue
        seen.add(module)
        todo.extend(imported_modules(module, root) - seen)
    return seen


def output_code(stage: str, root: Path | None = None) -> set[str]:
    """The modules that can change what ``stage`` writes: its dvc.yaml code deps."""
    return reachable([f"{PACKAGE}.stages.{stage}"], root or package_root(), NOT_RESULTS)


def computation_code(stage: str, root: Path | None = None) -> set[str]:
    """The modules that can change what one of ``stage``'s training runs computes (empty for a stage that trains
    nothing)."""
    return reachable(COMPUTATION_ROOTS.get(stage, ()), root or package_root(), (*NOT_RESULTS, *RUN_MECHANICS))


def source_paths(modules: Iterable[str], root: Path | None = None, prefix: str = "src/pedtune") -> list[str]:
    """The modules' files as repository paths (``src/pedtune/engine/train.py``), sorted."""
    root = root or package_root()
    paths = []
    for module in modules:
        path = module_file(module, root)
        if path is not None:
            paths.append(f"{prefix}/{path.relative_to(root).as_posix()}")
    return sorted(paths)


def fingerprint(modules: Iterable[str], root: Path | None = None) -> str:
    """sha256 over the modules' names and contents, by module name: a moved checkout or a file outside
    ``modules`` leaves it as it was."""
    root = root or package_root()
    digest = hashlib.sha256()
    for module in sorted(modules):
        path = module_file(module, root)
        content = path.read_bytes() if path is not None else b""
        digest.update(f"{module}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    return digest.hexdigest()


def study_code(root: Path | None = None) -> set[str]:
    """The modules that can change a study's results: every study stage's :func:`output_code`."""
    return set().union(*(output_code(stage, root) for stage in STUDY_STAGES))


def code_hashes(root: Path | None = None, prefix: str = "src/pedtune") -> dict[str, str]:
    """sha256 of each :func:`study_code` file, by repository path: what a published study's provenance records."""
    root = root or package_root()
    modules = study_code(root)
    return {path: hashlib.sha256((root / path.removeprefix(f"{prefix}/")).read_bytes()).hexdigest()
            for path in source_paths(modules, root, prefix)}


def changed_code(recorded: dict[str, str], root: Path | None = None, prefix: str = "src/pedtune") -> list[str]:
    """The result-affecting files whose content differs from ``recorded`` (:func:`code_hashes`), added or removed
    since; sorted repository paths."""
    current = code_hashes(root, prefix)
    return sorted(path for path in recorded.keys() | current.keys() if recorded.get(path) != current.get(path))
