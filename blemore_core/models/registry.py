"""Name -> class registries for the model building blocks (timm style; docs/ARCHITECTURE.md section 9).

One registry per kind: :data:`POOLING`, :data:`FUSION`, :data:`HEAD` and :data:`ARCH` (the organisers'
baselines). Registering a name twice raises :class:`RegistryError`; looking up an unknown name raises
:class:`RegistryError` listing the valid names. ``RegistryError`` subclasses both ``ValueError`` (bad user
input, the project's rule) and ``KeyError`` (a failed lookup).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError, KeyError):
    """A duplicate registration or an unknown name; the message names the registry and the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it readable
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A named collection of building blocks of one kind.

    Example::

        POOLING = Registry("pooling")

        @POOLING.register("stat")
        class StatPooling(nn.Module): ...

        cls = POOLING.get("stat")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``.

        Raises:
            RegistryError: when ``name`` is already registered in this registry, or is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise RegistryError(f"models/registry.py: {self.kind} registry: name must be a non-empty string, got {name!r}")

        def deco(obj: T) -> T:
            if name in self._items:
                raise RegistryError(
                    f"models/registry.py: {self.kind} {name!r} is already registered (by {self._items[name]!r})"
                )
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            RegistryError: for an unknown name, listing the valid names.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise RegistryError(
                f"models/registry.py: unknown {self.kind} {name!r} (valid: {', '.join(self.names())})"
            ) from None

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests that register temporary entries). Unknown names raise RegistryError."""
        self.get(name)
        del self._items[name]

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)})"


POOLING: Registry = Registry("pooling")
"""Temporal pooling: ``cls(in_dim, *, width, layers, heads, dropout)``; forward (B, T, D), (B, T) -> (B, out_dim)."""
FUSION: Registry = Registry("fusion")
"""Fusion: ``cls(input_dims, *, encoders, features, model, reg)``; forward(inputs, masks, keep) -> FusionResult."""
HEAD: Registry = Registry("head")
"""Heads: ``cls(in_dim, *, dropout)``; forward (B, H) -> HeadOutput with a (B, 6) distribution."""
ARCH: Registry = Registry("arch")
"""Whole-model baselines on aggregated features: ``cls(input_dims, *, encoders, reg)``."""
