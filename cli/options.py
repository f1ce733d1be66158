"""Click options whose defaults come from a config dataclass: defaults live once, in the dataclass."""

from __future__ import annotations

import dataclasses
from typing import Any


def default_of(config_cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``config_cls`` (its ``default`` or ``default_factory()``)."""
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
            raise KeyError(f"{config_cls.__name__}.{name} has no default")
    raise KeyError(f"{config_cls.__name__} has no field {name!r}")
