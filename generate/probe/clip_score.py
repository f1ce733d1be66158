"""CLIP score of images against captions with an open_clip model loaded from a local folder.

``--clip-model PATH`` is a folder in open_clip's hub layout (what ``huggingface-cli download
laion/CLIP-ViT-B-32-laion2B-s34B-b79K`` writes): ``open_clip_config.json`` (``model_cfg``, optional
``preprocess_cfg``) and the weights as safetensors (never unpickled; a folder holding only ``.bin``/``.pth``
weights is refused). It loads through open_clip's ``local-dir:`` schema, so nothing is downloaded.

CLIP score = 100 x max(cos(image, caption), 0), averaged over the pairs (Hessel et al., 2021, with w = 100).
Scores from different CLIP models do not compare, so the output names the model: folder, architecture and
the sha256 of its weights file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tokalign.align.errors import TokalignError

CONFIG = "open_clip_config.json"


def _weights_file(folder: Path) -> Path | None:
    """The checkpoint open_clip's ``local-dir:`` loader picks, if it is safetensors."""
    from open_clip.factory import _find_checkpoint_in_dir

    chosen = _find_checkpoint_in_dir(folder)
    return Path(chosen) if chosen else None


def check_clip_folder(folder: Path) -> None:
    """A one-line error unless ``folder`` is an open_clip folder with safetensors weights (torch-free checks first)."""
    folder = Path(folder)
    if not folder.exists():
        raise TokalignError(f"--clip-model {folder}: no such folder; pass a local open_clip model folder "
                            f"({CONFIG} + safetensors weights)")
    if not folder.is_dir():
        raise TokalignError(f"--clip-model {folder} is a file; pass the open_clip model folder holding {CONFIG} and its "
                            "weights")
    try:
        body = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except OSError:
        raise TokalignError(f"--clip-model {folder} has no {CONFIG}; pass an open_clip model folder (hub layout)") from None
    except ValueError:
        raise TokalignError(f"--clip-model {folder}: {CONFIG} is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("model_cfg"), dict):
        raise TokalignError(f"--clip-model {folder}: {CONFIG} has no \"model_cfg\" object")
    if not any(folder.glob("*.safetensors")):
        raise TokalignError(f"--clip-model {folder} holds no .safetensors weights (pickled .bin/.pth weights are not "
                            "loaded); convert them to safetensors")


@dataclass(frozen=True)
class ClipScorer:
    model: Any
    preprocess: Any
    tokenizer: Any
    identity: dict[str, Any]

    def score(self, images: Sequence[Any], captions: Sequence[str]) -> dict[str, Any]:
        """Per-pair CLIP scores of PIL ``images`` against ``captions`` and their mean."""
        import torch

        if len(images) != len(captions) or not images:
            raise ValueError("CLIP score needs as many images as captions, at least one")
        device = next(self.model.parameters()).device
        with torch.no_grad():
            pixels = torch.stack([self.preprocess(image.convert("RGB")) for image in images]).to(device)
            image_features = torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)
            text_features = torch.nn.functional.normalize(self.model.encode_text(self.tokenizer(list(captions)).to(device)).float(), dim=-1)
            cosine = (image_features * text_features).sum(-1)
        scores = (100 * cosine.clamp_min(0)).tolist()
        return {"clip_score": sum(scores) / len(scores), "pairs": len(scores), "per_pair": scores}


def load_clip(folder: Path, device: str = "cpu") -> ClipScorer:
    """The open_clip model of ``folder`` in eval mode (see the module docstring)."""
    import open_clip

    folder = Path(folder).resolve()
    check_clip_folder(folder)
    weights = _weights_file(folder)
    if weights is None or weights.suffix != ".safetensors":
        raise TokalignError(f"--clip-model {folder}: open_clip would load {weights.name if weights else 'no file'}; "
                            "keep only safetensors weights in the folder")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device=device)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    except Exception as exc:  # open_clip raises several types for a bad config or mismatched weights
        raise TokalignError(f"--clip-model {folder} does not load with open_clip ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:200]})") from None
    model.eval()
    cfg = json.loads((folder / CONFIG).read_text(encoding="utf-8"))["model_cfg"]
    identity = {"name": folder.name, "path": str(folder), "weights": weights.name, "weights_sha256": _file_sha256(weights),
                "embed_dim": cfg.get("embed_dim"), "vision_cfg": cfg.get("vision_cfg"), "text_cfg": cfg.get("text_cfg")}
    return ClipScorer(model, preprocess, tokenizer, identity)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
