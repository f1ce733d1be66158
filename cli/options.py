"""Click options written once, in the config dataclass: name, default, help and type come from the field.

A config field that is a command-line option carries its help in its metadata (``field(default=...,
metadata=option_help("..."))``, :func:`tokalign.align.training.settings.option_help`); :func:`config_option` turns
it into a ``click.option`` named after the field (``--batch-size`` for ``batch_size``, ``-k`` for ``k``), with the
field's default and help and a type read from its annotation (``int``, ``float``, ``str``, ``Path``, ``bool`` as a
flag; ``X | None`` as ``X``). Where the command line has kept another name, :data:`RENAMED` says which field the
option sets.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

#: command-line names that differ from the field they set (option -> field)
RENAMED = {"--run": "run_dir", "--cache-dir": "cache_root", "--to": "target"}
_TYPES = {"int": int, "float": float, "str": str, "Path": click.Path(path_type=Path)}


def field_of(config_cls: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            return f
    raise KeyError(f"{config_cls.__name__} has no field {name!r}")


def default_of(config_cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``config_cls`` (its ``default`` or ``default_factory()``)."""
    f = field_of(config_cls, name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    raise KeyError(f"{config_cls.__name__}.{name} has no default")


def help_of(config_cls: type, name: str) -> str:
    """The help of field ``name`` (its ``metadata["help"]``)."""
    help_text = field_of(config_cls, name).metadata.get("help")
    if not help_text:
        raise KeyError(f"{config_cls.__name__}.{name} carries no help in its metadata")
    return help_text


def option_name(field_name: str) -> str:
    """The command-line name of a field: ``--`` and the name with dashes (``-`` and a one-letter name), unless
    :data:`RENAMED` keeps another."""
    renamed = {f: option for option, f in RENAMED.items()}
    dashes = "-" if len(field_name) == 1 else "--"
    return renamed.get(field_name, dashes + field_name.replace("_", "-"))


def config_option(config_cls: type, name: str, dest: str | None = None, **click_kwargs: Any):
    """``click.option`` for field ``name`` of ``config_cls`` (module docstring); ``dest`` names the parameter
    (default: the field's name); ``click_kwargs`` add to or override what the field gives (e.g. ``type``)."""
    f = field_of(config_cls, name)
    annotation = str(f.type).replace(" | None", "").replace("Optional[", "").rstrip("]")
    kwargs: dict[str, Any] = {"help": help_of(config_cls, name)}
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
        kwargs["required"] = True
    else:
        kwargs["default"] = default_of(config_cls, name)
        kwargs["show_default"] = kwargs["default"] is not None and annotation != "bool"
    if annotation == "bool":
        kwargs["is_flag"] = True
    elif annotation in _TYPES:
        kwargs["type"] = _TYPES[annotation]
    kwargs.update(click_kwargs)
    return click.option(option_name(name), dest or name, **kwargs)
