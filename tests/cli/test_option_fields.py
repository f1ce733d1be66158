"""Every command-line option that sets a config field is that field: same name (dashes), same default, same help.

An option corresponds to a field when its parameter has the field's name, or when its name is one
:data:`tokalign.cli.options.RENAMED` maps to the field. Its help must be the field's ``metadata["help"]``, so the
option is written once, in the dataclass; commands listed in ``HELP_IN_DECORATORS`` still write their help in the
click decorator, and for them only name and default are checked. A field whose default is computed
(``default_factory``) may leave the option's default ``None`` (the config computes it); a command may require an
option whose field has a default (library callers keep the default, the command line says it explicitly).
"""

from __future__ import annotations

import dataclasses
import importlib

import click
import pytest

from tokalign.cli.main import cli
from tokalign.cli.options import RENAMED, default_of, option_name

COMMANDS = {
    "fit": ["tokalign.align.fit.config:FitConfig"],
    "generator train": ["tokalign.generate.config:ModelConfig", "tokalign.generate.config:DataConfig",
                        "tokalign.generate.config:OptimConfig", "tokalign.generate.config:RunConfig"],
    "demo-corpus": ["tokalign.align.tokenize.demo_corpus:DemoCorpusConfig"],
    "tokenize": ["tokalign.align.tokenize.config:TokenizeConfig"],
    "export": ["tokalign.align.fit.export:ExportConfig"],
    "generator sample": ["tokalign.generate.sample.config:SampleConfig"],
    "generator probe": ["tokalign.generate.probe.config:ProbeConfig"],
}
HELP_IN_DECORATORS: set[str] = set()  # every command above takes its options' help from its config


def _command(path: str) -> click.Command:
    command = cli
    for name in path.split():
        command = command.commands[name]
    return command


def _fields(path: str) -> dict[str, tuple[type, dataclasses.Field]]:
    out = {}
    for spec in COMMANDS[path]:
        module, name = spec.split(":")
        cls = getattr(importlib.import_module(module), name)
        out.update({f.name: (cls, f) for f in dataclasses.fields(cls)})
    return out


def _pairs(path: str) -> list[tuple[click.Option, type, dataclasses.Field]]:
    fields = _fields(path)
    pairs = []
    for option in _command(path).params:
        if not isinstance(option, click.Option):
            continue
        renamed = [RENAMED[flag] for flag in option.opts if flag in RENAMED]
        name = renamed[0] if renamed else option.name
        if name in fields:
            pairs.append((option, *fields[name]))
    return pairs


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_options_take_their_fields_name_and_default(path):
    pairs = _pairs(path)
    assert pairs, f"{path}: no option corresponds to a field"
    for option, cls, field in pairs:
        assert option.opts[0] == option_name(field.name), (path, option.opts, field.name)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            assert option.required, (path, option.opts)
        elif not option.required:  # a command may ask explicitly for what the library defaults
            default = option.get_default(click.Context(_command(path)), call=False)
            computed = field.default_factory is not dataclasses.MISSING and default is None  # the config computes it
            assert computed or default == default_of(cls, field.name), (path, option.opts, default)


@pytest.mark.parametrize("path", sorted(set(COMMANDS) - HELP_IN_DECORATORS))
def test_options_take_their_fields_help(path):
    for option, cls, field in _pairs(path):
        assert field.metadata.get("help"), f"{cls.__name__}.{field.name} carries no help"
        assert option.help == field.metadata["help"], (path, option.opts)


def test_export_target_help_names_every_target():
    from tokalign.align.fit.export import EXPORT_TARGETS

    help_text = {o.name: o.help for o in _command("export").params}["target"]
    assert all(target in help_text for target in EXPORT_TARGETS), help_text
