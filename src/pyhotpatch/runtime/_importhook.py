"""Patch target modules that are imported after a hotpatch was applied.

A meta-path finder sits first on ``sys.meta_path``. For a module the active
patch is still waiting for, it asks the other finders for the spec and wraps
the loader, so that right after the module's code has run (and before the
importing statement returns) the engine patches it. Every other import is
untouched and costs one dictionary lookup.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

    from pyhotpatch.runtime._engine import Engine


class PatchFinder:
    """A ``sys.meta_path`` finder that wraps the loaders of pending target modules."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """Find ``fullname`` with the other finders; wrap its loader if the patch targets it."""
        if fullname not in self.engine.targets():
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader, self.engine)  # type: ignore[assignment]
        return spec


class _PatchingLoader:
    """Delegates to the real loader; patches the module once its code has run."""

    def __init__(self, loader: Any, engine: Engine) -> None:
        self._loader = loader
        self._engine = engine

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._engine.patch_imported(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def install(engine: Engine) -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, PatchFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, PatchFinder(engine))
