"""The validated settings of ``tokalign generator sample``: one frozen dataclass, defaults stated once here.

Torch-free. Click options take their defaults and help from this class (``tokalign.cli.options.config_option``); every
check a user can fail raises :class:`~tokalign.align.errors.TokalignError` with one line naming the fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tokalign.align.errors import TokalignError
from tokalign.align.training.settings import option_help as _help

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class SampleConfig:
    """What to sample, how, and where to write it.

    ``prompts`` empty means no prompt (image-only models); ``n`` images are drawn per prompt. ``cfg_scale`` 1 is
    plain conditional sampling; ``top_k`` 0 and ``top_p`` 1 switch those filters off.
    """

    model: Path = field(metadata=_help("Generator folder `tokalign generator train` wrote."))
    out: Path = field(metadata=_help("Folder for the PNGs, grid.png, samples.safetensors and samples.json."))
    prompts: tuple[str, ...] = ()
    n: int = field(default=8, metadata=_help("Images per prompt."))
    temperature: float = field(default=1.0, metadata=_help("Softmax temperature (> 0)."))
    top_k: int = field(default=0, metadata=_help("Keep the k most likely image ids (0 = off)."))
    top_p: float = field(default=1.0, metadata=_help("Nucleus sampling mass in (0, 1] (1 = off)."))
    cfg_scale: float = field(default=1.0, metadata=_help(
        "Classifier-free guidance scale on raw logits, u + s (c - u) (1 = off)."))
    seed: int = field(default=0, metadata=_help("Seed; image (prompt p, sample s) is the same in any batch."))
    batch_size: int = field(default=16, metadata=_help("Images per batch (x2 rows with guidance)."))
    device: str = field(default="auto", metadata=_help(f"{', '.join(DEVICES)} or cuda:N."))
    dtype: str = field(default="auto", metadata=_help("Model precision (auto: bfloat16 on GPU, float32 on CPU)."))
    # where the generator's corpus moved to [default: the record's path]
    corpus: Path | None = field(default=None, metadata=_help(
        "The generator's corpus, if it moved (its image tokenizer decodes the samples)."))
    image_tokenizer_path: str | None = field(default=None, metadata=_help(
        "Where the corpus's image tokenizer weights moved to."))
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "prompts", tuple(self.prompts))
        if self.n < 1:
            raise TokalignError(f"-n {self.n}: draw at least 1 image per prompt")
        if self.batch_size < 1:
            raise TokalignError(f"--batch-size {self.batch_size} must be at least 1")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise TokalignError(f"--temperature {self.temperature} must be a finite number above 0")
        if self.top_k < 0:
            raise TokalignError(f"--top-k {self.top_k} must be 0 (off) or positive")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise TokalignError(f"--top-p {self.top_p} must lie in (0, 1]; 1 switches nucleus sampling off")
        if not (math.isfinite(self.cfg_scale) and self.cfg_scale >= 0):
            raise TokalignError(f"--cfg-scale {self.cfg_scale} must be a finite number >= 0 (1 = no guidance)")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise TokalignError(f"--device {self.device!r} is unknown; use {', '.join(DEVICES)} or cuda:N")
        if self.dtype not in DTYPES:
            raise TokalignError(f"--dtype {self.dtype!r} is unknown; use one of {', '.join(DTYPES)}")
        if self.out.resolve() == self.model.resolve():
            raise TokalignError("--out is the model folder; choose another folder for the samples")
        for number, prompt in enumerate(self.prompts, 1):
            check_prompt_text(prompt, f"prompt {number}")

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0

    def settings(self) -> dict:
        """The sampling settings as recorded in ``samples.json``."""
        return {"n": self.n, "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                "cfg_scale": self.cfg_scale, "seed": self.seed, "batch_size": self.batch_size}


def check_prompt_text(prompt: str, where: str) -> None:
    """Refuse a prompt holding bytes that are not UTF-8 (a command line decodes those to lone surrogates)."""
    if not isinstance(prompt, str):
        raise TokalignError(f"{where} is not text ({type(prompt).__name__}); pass a string")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        shown = prompt.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise TokalignError(f"{where} ({_preview(shown)}) holds bytes that are not UTF-8; write it in UTF-8") from None


def _preview(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_prompts_file(path: Path) -> tuple[str, ...]:
    """Prompts from a file: ``.jsonl`` lines with ``prompt`` (or ``caption``), else one prompt per non-blank line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokalignError(f"--prompts {path} is unreadable ({type(exc).__name__}); pass a UTF-8 text file, "
                            "one prompt per line") from None
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a UTF-8 byte order mark
    lines = [(number, _decoded(raw, path, number)) for number, raw in enumerate(data.splitlines(), 1)]
    lines = [(number, line) for number, line in lines if line.strip()]
    if path.suffix != ".jsonl":
        prompts = tuple(line.strip() for _, line in lines)
    else:
        prompts = tuple(_jsonl_prompt(line, path, number) for number, line in lines)
    if not prompts:
        raise TokalignError(f"--prompts {path} holds no prompts")
    return prompts


def _decoded(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        shown = _preview(raw.decode("utf-8", "replace"))
        raise TokalignError(f"--prompts {path} line {number} ({shown}) holds bytes that are not UTF-8 (byte "
                            f"0x{raw[exc.start]:02x} at column {exc.start + 1}); save the file as UTF-8") from None


def _jsonl_prompt(line: str, path: Path, number: int) -> str:
    try:
        body = json.loads(line)
        value = body.get("prompt", body.get("caption")) if isinstance(body, dict) else None
    except ValueError:
        value = None
    if not isinstance(value, str):
        raise TokalignError(f"--prompts {path} line {number} is not a JSON object with a \"prompt\" string")
    check_prompt_text(value, f"--prompts {path} line {number}")
    return value
