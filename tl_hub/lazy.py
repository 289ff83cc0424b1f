"""Lazy public names for a package (PEP 562): the defining module is imported on first use, so importing
the package stays fast (`tl-hub --help` never loads torch).

Example:
    >>> getattr_, dir_ = lazy_exports("demo", {"sqrt": "math"}, {})
    >>> getattr_("sqrt")(9.0), dir_()
    (3.0, ['sqrt'])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of a package whose public names (`exports`: name -> module) are
    imported on first access and then kept in the package's `namespace` (its globals()); `__dir__` lists
    the namespace's `__all__` (else the exports)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace.get("__all__", exports))

    return __getattr__, __dir__
