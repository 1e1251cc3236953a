"""Build a hotpatch package from two releases of a distribution.

``build(FROM, TO)`` loads both releases, diffs every changed module (see
``_diff``), refuses what cannot be applied to live code safely, and returns a
``BuildResult`` that writes a deterministic ``.hotpatch`` file.
"""

from __future__ import annotations

import ast
import hashlib
import os
from dataclasses import dataclass
from pathlib import PurePosixPath

from packaging.utils import canonicalize_name

from pyhotpatch.build._diff import Context, Explain, ModuleDiffer
from pyhotpatch.build._sources import Release, load_release
from pyhotpatch.errors import NotHotpatchable, SourceError
from pyhotpatch.package import Manifest, ModulePatch, Target, package_bytes, write_package

__all__ = ["BuildResult", "Explain", "build", "build_releases", "load_release"]

_COMPILED = (".so", ".pyd", ".dll", ".dylib", ".pyx", ".pxd", ".c", ".cpp", ".cc", ".h", ".rs")
_IGNORED_FILES = (".pyi", ".typed", ".md", ".rst", ".txt")


@dataclass
class BuildResult:
    """A built package (manifest and sources) and the explanation of how it was made."""

    manifest: Manifest
    sources: dict[str, str]
    explain: Explain

    def to_bytes(self) -> bytes:
        """The package file's bytes (deterministic)."""
        return package_bytes(self.manifest, self.sources)

    def write(self, path: str | os.PathLike[str]) -> str:
        """Write the package atomically; return its sha256."""
        return write_package(path, self.manifest, self.sources)


def build(
    old: str,
    new: str,
    *,
    patch_id: str | None = None,
    title: str | None = None,
    classification: str = "Security",
    cves: tuple[str, ...] = (),
) -> BuildResult:
    """Build a package that takes processes running ``old`` to the behaviour of ``new``.

    Raises ``SourceError`` when a release cannot be loaded or the two are not
    releases of the same distribution, and ``NotHotpatchable`` (with every
    ``path:line: reason``) when a change must ship as a baseline instead.
    """
    return build_releases(
        load_release(old),
        load_release(new),
        patch_id=patch_id,
        title=title,
        classification=classification,
        cves=cves,
    )


def explain(old: str, new: str) -> Explain:
    """What building ``old`` -> ``new`` would swap, add, rebuild, ignore and refuse."""
    return _diff_releases(load_release(old), load_release(new))[2]


def build_releases(
    old: Release,
    new: Release,
    *,
    patch_id: str | None = None,
    title: str | None = None,
    classification: str = "Security",
    cves: tuple[str, ...] = (),
) -> BuildResult:
    """``build`` for releases already loaded."""
    modules, sources, report = _diff_releases(old, new)
    if report.refused:
        raise NotHotpatchable(report.refused)
    if not modules:
        raise SourceError(
            f"{old.name} {old.version} -> {new.version} changes no code: nothing to hotpatch"
        )
    target = Target(old.name, old.version, new.version, tuple(modules))
    draft = Manifest(
        id="KB0", title="", classification=classification, cves=cves, targets=(target,)
    )
    if patch_id is None:
        digest = hashlib.sha256(package_bytes(draft, sources)).hexdigest()
        patch_id = f"KB{int(digest[:12], 16) % 10_000_000:07d}"
    manifest = Manifest(
        id=patch_id,
        title=title or f"{old.name} {old.version} -> {new.version} hotpatch",
        classification=classification,
        cves=tuple(cves),
        targets=(target,),
    )
    Manifest.from_json(manifest.to_json())  # the builder emits only what readers accept
    return BuildResult(manifest, sources, report)


def _diff_releases(old: Release, new: Release) -> tuple[list[ModulePatch], dict[str, str], Explain]:
    if canonicalize_name(old.name) != canonicalize_name(new.name):
        raise SourceError(
            f"{old.origin} is {old.name}, {new.origin} is {new.name}: not one distribution"
        )
    report = Explain()
    context = Context(old.top_level | new.top_level, _importers(old))
    modules: list[ModulePatch] = []
    sources: dict[str, str] = {}
    for path in sorted(set(old.files) | set(new.files)):
        before, after = old.files.get(path), new.files.get(path)
        if before == after:
            continue
        if path.endswith(".py"):
            if before is None:
                report.refused.append(
                    f"{path}:1: new module; files on disk stay at the baseline, so it could not be imported"
                )
                continue
            if after is None:
                report.ignored.append(f"{path}:1: module removed; the loaded one stays")
                continue
            name = _module_name(path)
            try:
                old_text, new_text = before.decode(), after.decode()
            except UnicodeDecodeError:
                report.refused.append(f"{path}:1: source is not UTF-8")
                continue
            differ = ModuleDiffer(name, path, old_text, new_text, context)
            differ.run()
            report.extend(differ.explain)
            if differ.actions:
                modules.append(
                    ModulePatch(
                        name,
                        path,
                        hashlib.sha256(before).hexdigest(),
                        differ.future,
                        tuple(differ.actions),
                        differ.imports,
                        differ.fixed_imports,
                    )
                )
                sources.update(differ.sources)
        elif path.endswith(_COMPILED):
            report.refused.append(
                f"{path}:1: compiled module changed: it cannot be patched in memory"
            )
        elif path.endswith(_IGNORED_FILES):
            report.ignored.append(f"{path}:1: non-code file changed")
        else:
            report.refused.append(
                f"{path}:1: data file changed: code that read it at start-up keeps the old data"
            )
    return modules, sources, report


def _module_name(path: str) -> str:
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _importers(release: Release) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Who does ``from M import N`` at module level in the baseline: aliases to re-point."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for path, data in release.files.items():
        if not path.endswith(".py"):
            continue
        module = _module_name(path)
        try:
            tree = ast.parse(data)
        except (SyntaxError, ValueError):
            continue
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        for stmt in tree.body:
            if not isinstance(stmt, ast.ImportFrom):
                continue
            source = stmt.module or ""
            if stmt.level:
                base = package.split(".")
                base = base[: len(base) - (stmt.level - 1)] if stmt.level > 1 else base
                source = ".".join(p for p in (*base, stmt.module or "") if p)
            for alias in stmt.names:
                out.setdefault((source, alias.name), []).append(
                    (module, alias.asname or alias.name)
                )
    return out
