"""Registries by short name (tasks, algorithms, heads, models, methods).

Unknown names raise a ``KeyError`` subclass that suggests the closest known names, so a typo
on the command line is one readable line instead of a traceback into a dict lookup.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not in a registry; the message lists the close and the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def did_you_mean(name: str, known: list[str] | tuple[str, ...], kind: str) -> str:
    """Format the standard "unknown X" message with suggestions."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known))}."


class Registry(Generic[T]):
    """A name -> object mapping with decorator registration and did-you-mean lookups."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T, *, overwrite: bool = False) -> None:
        """Add ``obj`` under ``name``; ``overwrite`` replaces an existing entry (tests, notebooks)."""
        if overwrite:
            self._items[name] = obj
        else:
            self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(did_you_mean(name, list(self._items), self.kind)) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
