"""MoVQGAN, the image tokenizer of the paper: diffusers ``VQModel`` in the Kandinsky 2.2 configuration.

A 256 x 256 RGB image becomes a 32 x 32 grid of ids into a 16,384-entry
codebook (three 2x downsamplings, f = 8), tokens in row-major grid order, and
ids decode back to an image.  The weights come from a local folder (a
``config.json`` plus ``diffusion_pytorch_model.safetensors``, or a folder
holding them in a ``movq/`` subfolder, as a snapshot of
kandinsky-community/kandinsky-2-2-decoder does), from a hub id where a
network exists, or are random (:meth:`MoVQTokenizer.random`) for tests and
benchmarks.  Weights are only ever read from safetensors (nothing is
unpickled); finding, loading and hashing them is ``movq_weights.py``.

Encoding runs the encoder (``VQModel.encode(x).latents``) in the chosen dtype
and then searches the nearest codebook entry itself, in float32 with exact
differences (``cdist`` without the matrix-product shortcut), ties going to
the lowest id.  diffusers' ``VectorQuantizer`` does the same search through
``torch.cdist``'s default, which for large inputs expands
``|z|^2 + |e|^2 - 2 z.e`` in the model's dtype; that loses precision (in
bfloat16/float16 badly) and can make an id depend on the batch it was
encoded in.  In float32 both agree except on near-ties (see the tests).

Decoding looks the ids up (``quantize.get_codebook_entry``) and runs
``VQModel.decode(q, force_not_quantize=True)``, which feeds the quantized
latents to the decoder both as its input (after ``post_quant_conv``) and, for
``norm_type="spatial"``, as the conditioning of every spatial norm.

The sha256 of a tokenizer identifies its weights, independent of the device
and runtime dtype: for each state-dict key in sorted order it hashes the key
(UTF-8), a NUL byte, the text ``float32 <shape>`` (e.g. ``float32 (16384, 4)``),
a NUL byte and the tensor's float32 little-endian bytes, all on the CPU.  It
is taken from the float32 weights as loaded: lazily when the model runs in
float32, at load time (before casting) otherwise.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.image_tokenizers.movq_weights import ARCH_KEYS, IMAGE_SIZE, arch_config, check_config, load_model, state_sha256

log = logging.getLogger(__name__)

__all__ = ["MoVQTokenizer", "kandinsky_config"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RANDOM_CODEBOOK_STD = 0.25  # ~ the std of a randomly initialized encoder's latents (0.19-0.25 measured)
_SEARCH_ROWS = 2048  # latent vectors searched at once: 2048 x 16384 float32 distances = 128 MB


def kandinsky_config() -> dict:
    """The ``VQModel`` configuration of Kandinsky 2.2's MoVQ (67.8M parameters, 16,384 codes, f = 8)."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "down_block_types": ("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
        "up_block_types": ("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
        "num_vq_embeddings": 16384,
        "block_out_channels": (128, 256, 256, 512),
        "vq_embed_dim": 4,
        "layers_per_block": 2,
        "norm_type": "spatial",
    }


class MoVQTokenizer:
    """Images <-> MoVQ codebook ids, with the surface of ``PatchKMeansTokenizer``."""

    kind = "movq"
    image_size = IMAGE_SIZE

    def __init__(self, model, *, path: str | None = None, random_seed: int | None = None, device=None,
                 dtype: str = "float32", batch_size: int = 16) -> None:
        """Wrap a float32 CPU ``VQModel``; it is hashed if need be, cast to ``dtype`` and moved to ``device``."""
        self.device = _pick_device(device)
        self.dtype = dtype
        torch_dtype = _pick_dtype(dtype, self.device)
        if int(batch_size) < 1:
            raise TokalignError(f"MoVQ batch size is {batch_size}; use at least 1")
        self.batch_size = int(batch_size)
        self.path, self.random_seed = path, random_seed
        self._config = arch_config(model.config)
        check_config(self._config, path or "the MoVQ model")
        assert next(model.parameters()).dtype == torch.float32, "the model must arrive in float32 to be hashed"
        self._sha256 = None if dtype == "float32" else state_sha256(model)
        # the nearest-code search runs in float32: keep the codebook as loaded, before any cast
        self._codebook = model.quantize.embedding.weight.detach().to(self.device, torch.float32, copy=True)
        self._model = _cast(model.requires_grad_(False).eval().to(self.device), torch_dtype)

    # ------------------------------------------------------------ properties

    @property
    def model(self):
        """The wrapped diffusers ``VQModel`` (eval mode, no gradients)."""
        return self._model

    @property
    def codebook_size(self) -> int:
        return int(self._config["num_vq_embeddings"])

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // 2 ** (len(self._config["block_out_channels"]) - 1)
        return (side, side)

    @property
    def tokens_per_image(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def sha256(self) -> str:
        """sha256 of the float32 weights (see the module docstring), computed once."""
        if self._sha256 is None:
            self._sha256 = state_sha256(self._model)
        return self._sha256

    def identity(self) -> dict:
        """What a corpus manifest records to tie its tokens to these weights."""
        identity = {
            "kind": self.kind,
            "codebook_size": self.codebook_size,
            "grid": list(self.grid),
            "image_size": self.image_size,
            "sha256": self.sha256,
            "path": self.path,
            "config": dict(self._config),
        }
        if self.random_seed is not None:
            identity["random_seed"] = self.random_seed
        return identity

    def __repr__(self) -> str:
        where = f"path={self.path!r}" if self.path is not None else f"random_seed={self.random_seed}"
        return (f"MoVQTokenizer(codebook_size={self.codebook_size}, grid={self.grid}, {where}, "
                f"device='{self.device}', dtype='{self.dtype}', batch_size={self.batch_size})")

    # ------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device=None, dtype: str = "float32",
                        batch_size: int = 16) -> "MoVQTokenizer":
        """Weights from a local folder (with the files, or a ``movq/`` subfolder holding them) or a hub id."""
        _pick_dtype(dtype, _pick_device(device))  # fail on a bad option before loading 270 MB
        model, where = load_model(str(path))
        return cls(model, path=where, device=device, dtype=dtype, batch_size=batch_size)

    @classmethod
    def random(cls, seed: int = 0, device=None, batch_size: int = 16, config: dict | None = None,
               dtype: str = "float32") -> "MoVQTokenizer":
        """The architecture (Kandinsky's, or it updated by ``config``) with random weights from ``seed``.

        diffusers' default initialization, except the codebook: its default
        (uniform in +-1/K) makes all codes nearly equidistant from any latent
        in float32, so it is drawn from N(0, 0.25^2), the scale of the
        latents.  The global torch RNG is left untouched.  Weights depend on
        the torch version; the sha256 tells.
        """
        from diffusers import VQModel

        arch = dict(kandinsky_config(), **(config or {}))
        unknown = sorted(set(arch) - set(ARCH_KEYS))
        if unknown:
            raise TokalignError(f"MoVQ config keys {unknown} are unknown; use only {', '.join(ARCH_KEYS)}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = VQModel(**arch)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            weight = model.quantize.embedding.weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * RANDOM_CODEBOOK_STD)
        return cls(model, random_seed=int(seed), device=device, dtype=dtype, batch_size=batch_size)

    @classmethod
    def from_identity(cls, identity: dict, path: str | None = None, device=None, *, dtype: str = "float32",
                      batch_size: int = 16) -> "MoVQTokenizer":
        """Reload the tokenizer a manifest names (random weights, ``path`` or the recorded path) and check its sha256."""
        if identity.get("kind") != cls.kind:
            raise TokalignError(f"image tokenizer kind {identity.get('kind')!r} is not movq; reload it with its own kind")
        where = path or identity.get("path")
        if where is None and identity.get("random_seed") is not None:
            tokenizer = cls.random(identity["random_seed"], device=device, batch_size=batch_size,
                                   config=identity.get("config"), dtype=dtype)
        elif where:
            tokenizer = cls.from_pretrained(where, device=device, dtype=dtype, batch_size=batch_size)
        else:
            raise TokalignError("the corpus does not record where its MoVQ weights are; pass --image-tokenizer-path")
        if tokenizer.sha256 != identity.get("sha256"):
            source = f"the MoVQ model at {where}" if where else "the rebuilt random MoVQ model"
            raise TokalignError(f"{source} is not the MoVQ tokenizer these tokens were made with (sha256 differs); "
                                "pass --image-tokenizer-path of the original weights")
        return tokenizer

    # ------------------------------------------------------------ encode / decode

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Tokens (N, grid*grid) uint16 of images (N, image_size, image_size, 3) uint8 (or one image)."""
        images = np.asarray(images)
        _check_images(tuple(images.shape), str(images.dtype), images.dtype == np.uint8, self.image_size)
        return self.encode_tensor(torch.from_numpy(np.ascontiguousarray(images))).cpu().numpy().astype(np.uint16)

    @torch.inference_mode()
    def encode_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens (N, grid*grid) int64 on ``self.device`` of a uint8 tensor (N, S, S, 3) on any device."""
        _check_images(tuple(images.shape), str(images.dtype), images.dtype == torch.uint8, self.image_size)
        if images.ndim == 3:
            images = images[None]
        out = torch.empty((len(images), self.tokens_per_image), dtype=torch.int64, device=self.device)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size].to(self.device, non_blocking=True)
            out[start : start + len(chunk)] = self._encode_chunk(chunk)
        return out

    @torch.inference_mode()
    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Images (N, image_size, image_size, 3) uint8 of tokens (N, grid*grid) or (grid*grid,)."""
        tokens = self._check_tokens(tokens)
        out = np.empty((len(tokens), self.image_size, self.image_size, 3), dtype=np.uint8)
        for start in range(0, len(tokens), self.batch_size):
            chunk = torch.from_numpy(tokens[start : start + self.batch_size].astype(np.int64)).to(self.device)
            out[start : start + len(chunk)] = self._decode_chunk(chunk).cpu().numpy()
        return out

    @torch.inference_mode()
    def nearest_codes(self, latents: torch.Tensor) -> torch.Tensor:
        """Ids (B, h*w) of the codes nearest to ``latents`` (B, D, h, w): exact float32, lowest id on ties."""
        b, d, h, w = latents.shape
        z = latents.to(self.device, torch.float32).permute(0, 2, 3, 1).reshape(-1, d)
        ids = [torch.cdist(z[s : s + _SEARCH_ROWS], self._codebook, compute_mode="donot_use_mm_for_euclid_dist")
               .argmin(dim=1) for s in range(0, len(z), _SEARCH_ROWS)]
        return torch.cat(ids).view(b, h * w)

    def _encode_chunk(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.nearest_codes(self.latents(pixels))

    @torch.inference_mode()
    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """The encoder's continuous latents (B, D, h, w) of uint8 NHWC pixels on the device, before quantization."""
        # NCHW in memory (contiguous), never a channels-last view: PyTorch's CPU GroupNorm on channels-last
        # input loses float32 precision on near-flat channels (errors of order 1 against float64 measured on
        # shape scenes, and ids that depend on the batch); the contiguous path agrees with float64 to ~1e-5.
        x = (pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0).to(self._model.dtype).contiguous()
        latents = self._model.encode(x).latents
        assert latents.shape[2:] == self.grid, f"latent grid {tuple(latents.shape[2:])} != {self.grid}"
        return latents

    def _decode_chunk(self, ids: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC images of int64 ids (B, L) on the device."""
        shape = (len(ids), *self.grid, int(self._config["vq_embed_dim"]))
        flat = ids.reshape(-1)
        if self._model.config.lookup_from_codebook:  # decode() then looks the ids up itself
            sample = self._model.decode(flat, force_not_quantize=True, shape=shape).sample
        else:
            quant = self._model.quantize.get_codebook_entry(flat, shape)
            sample = self._model.decode(quant, force_not_quantize=True).sample
        pixels = ((sample.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1)

    def _check_tokens(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2 or tokens.shape[1] != self.tokens_per_image or tokens.dtype.kind not in "iu":
            raise TokalignError(f"image tokens have shape {tokens.shape} and dtype {tokens.dtype}; expected integers "
                                f"of shape (N, {self.tokens_per_image})")
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook_size):
            raise TokalignError(f"image token ids span {tokens.min()}..{tokens.max()} but the MoVQ codebook has "
                                f"{self.codebook_size} codes; use the tokenizer the tokens were made with")
        return tokens


# ---------------------------------------------------------------- options


def _pick_device(device) -> torch.device:
    """``device`` as a torch.device; None means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise TokalignError(f"device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TokalignError(f"device {device} was asked for but CUDA is not available here; use --device cpu")
    return device


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype not in DTYPES:
        raise TokalignError(f"MoVQ dtype {dtype!r} is unknown; use one of {', '.join(DTYPES)}")
    if dtype == "float16" and device.type == "cpu":
        raise TokalignError("MoVQ in float16 is not supported on the CPU; use --dtype bfloat16 or float32")
    return DTYPES[dtype]


def _cast(model, dtype: torch.dtype):
    """``model`` in ``dtype`` (``half``/``bfloat16`` rather than ``to(dtype)``, which makes diffusers warn needlessly)."""
    if dtype == torch.float16:
        return model.half()
    if dtype == torch.bfloat16:
        return model.bfloat16()
    return model


def _check_images(shape: tuple, dtype: str, is_uint8: bool, size: int) -> None:
    """Raise unless ``shape``/``dtype`` are those of uint8 RGB images (N, size, size, 3) or one (size, size, 3)."""
    full = (1, *shape) if len(shape) == 3 else shape
    if not is_uint8 or len(full) != 4 or full[1:] != (size, size, 3) or full[0] < 1:
        raise TokalignError(f"images have shape {shape} and dtype {dtype}; expected uint8 RGB of shape "
                            f"(N, {size}, {size}, 3) with N >= 1 (resize them to {size} x {size} first)")
