"""The probe's fixed prompts, read from the package data file ``prompts.json`` (knowledge and few-shot French)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Translation:
    word: str
    expected: str
    prompt: str  #: instruction, the shots one per line, then ``word =>``


@dataclass(frozen=True)
class Prompts:
    knowledge: tuple[str, ...]
    translations: tuple[Translation, ...]


def load_prompts() -> Prompts:
    body = json.loads(resources.files("tokalign.generate.probe").joinpath("prompts.json").read_text(encoding="utf-8"))
    spec = body["translation"]
    sep = spec["separator"]
    head = "\n".join([spec["instruction"], *(f"{en}{sep}{fr}" for en, fr in spec["shots"])])
    translations = tuple(Translation(en, fr, f"{head}\n{en}{sep.rstrip()}") for en, fr in spec["items"])
    return Prompts(tuple(body["knowledge"]), translations)


def translation_hit(completion: str, expected: str) -> bool:
    """Exact match of the completion's first line, ignoring surrounding spaces and case."""
    first = completion.strip().split("\n", 1)[0] if completion.strip() else ""
    return first.strip().casefold() == expected.strip().casefold()
