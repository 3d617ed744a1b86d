"""Named values that a layer above the runtime registers on it, such as caches by alias.

The runtime owns each registry (it lives as long as the runtime) but knows nothing of what is
in it: the layer that registers values chooses their type and decides when they come and go.
That is how ``Runtime.cache(alias)`` can find the caches ``megatrio.open_cache`` opens without
the runtime importing the stores layer built on it. Imports nothing of megatrio.
"""

from __future__ import annotations

from typing import Generic, TypeVar, final

T = TypeVar("T")


@final
class Registry(Generic[T]):
    """Values of one *kind* (``"cache"``) by name, for the runtime called *owner*.

    Not thread-safe and never a checkpoint: it is changed from the runtime's event loop only.
    """

    def __init__(self, kind: str, owner: str) -> None:
        self.kind = kind
        self.owner = owner
        self._values: dict[str, T] = {}

    def add(self, name: str, value: T) -> None:
        """Register *value* as *name*.

        Raises:
            ValueError: *name* is taken (the message names the runtime, the kind and the name).
        """
        if name in self._values:
            raise ValueError(f"runtime {self.owner!r} already has a {self.kind} {name!r}")
        self._values[name] = value

    def discard(self, name: str, value: T) -> None:
        """Unregister *name* if it is still *value*. Idempotent, so every exit path may call it
        without removing a value registered after it under the same name."""
        if self._values.get(name) is value:
            del self._values[name]

    def get(self, name: str) -> T:
        """The value registered as *name*.

        Raises:
            LookupError: nothing is (the message lists the names that are).
        """
        try:
            return self._values[name]
        except KeyError:
            known = ", ".join(sorted(self._values)) or "none"
            message = f"no {self.kind} {name!r} in runtime {self.owner!r} (known: {known})"
            raise LookupError(message) from None

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __len__(self) -> int:
        return len(self._values)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._values)

    def values(self) -> list[T]:
        """The registered values, in the order of their names."""
        return [self._values[name] for name in sorted(self._values)]

    def __repr__(self) -> str:
        return f"<Registry of {self.kind} in {self.owner!r}: {', '.join(self.names()) or 'none'}>"
