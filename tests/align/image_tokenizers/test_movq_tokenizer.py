"""MoVQ image tokenizer: the Kandinsky 2.2 architecture with random weights (no download), on the CPU.

The headline tests use the full architecture (67.8M parameters); the rest use
a narrower model with the same layout (four blocks, 32 x 32 grid, 16,384
codes) so the file stays fast.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.image_tokenizers.movq import MoVQTokenizer, kandinsky_config

SMALL = {"block_out_channels": (32, 32, 32, 64), "layers_per_block": 1}


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with a bright square and some noise: uint8 (n, 256, 256, 3)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, 256)
    out = np.empty((n, 256, 256, 3), np.float64)
    for i in range(n):
        colour = rng.uniform(0, 255, size=(2, 3))
        out[i] = colour[0] * ramp[:, None, None] + colour[1] * ramp[None, :, None]
        top, left = rng.integers(0, 192, size=2)
        out[i, top : top + 64, left : left + 64] = rng.uniform(0, 255, size=3)
    out += rng.normal(0, 8, size=out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def full() -> MoVQTokenizer:
    return MoVQTokenizer.random(seed=0, device="cpu")


@pytest.fixture(scope="module")
def full_ids(full) -> np.ndarray:
    return full.encode(_images(2))


@pytest.fixture(scope="module")
def small() -> MoVQTokenizer:
    return MoVQTokenizer.random(seed=0, device="cpu", config=SMALL)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return _images(3, seed=1)


@pytest.fixture(scope="module")
def small_ids(small, images) -> np.ndarray:
    return small.encode(images)


@pytest.fixture(scope="module")
def saved(small, tmp_path_factory):
    """A parent folder whose movq/ subfolder holds the small model's config.json + safetensors."""
    parent = tmp_path_factory.mktemp("movq-snapshot")
    small.model.save_pretrained(parent / "movq", safe_serialization=True)
    return parent


# ---------------------------------------------------------------- the full architecture


def test_encode_gives_1024_ids_below_16384_per_image(full, full_ids):
    assert full.codebook_size == 16384 and full.grid == (32, 32) and full.tokens_per_image == 1024
    assert full_ids.shape == (2, 1024) and full_ids.dtype == np.uint16
    assert int(full_ids.max()) < 16384
    assert len(np.unique(full_ids)) > 50  # the random codebook is used, not one code


def test_decode_gives_a_256x256_image(full, full_ids):
    images = full.decode(full_ids)
    assert images.shape == (2, 256, 256, 3) and images.dtype == np.uint8
    assert images.std() > 0


def test_full_model_has_the_kandinsky_architecture(full):
    assert sum(p.numel() for p in full.model.parameters()) == 67_832_495
    identity = full.identity()
    assert identity["config"] == {**json.loads(json.dumps(kandinsky_config())),
                                  "norm_num_groups": 32, "act_fn": "silu", "mid_block_add_attention": True}
    assert identity["grid"] == [32, 32] and identity["image_size"] == 256 and identity["random_seed"] == 0


# ---------------------------------------------------------------- encoding


def test_encode_is_deterministic_and_independent_of_batch_size(small, images, small_ids):
    one_at_a_time = MoVQTokenizer.random(seed=0, device="cpu", config=SMALL, batch_size=1)
    assert np.array_equal(one_at_a_time.encode(images), small_ids)
    assert np.array_equal(small.encode(images), small_ids)
    assert np.array_equal(small.encode(images[1]), small_ids[1:2])  # one image (S, S, 3) is a batch of one


def test_encoder_latents_match_a_float64_reference_on_flat_images_in_uneven_batches(small):
    """Shape scenes have near-constant channels, where a channels-last float32 GroupNorm once went wrong."""
    from tokalign.align.sources.shapes import shape_item

    scenes = torch.from_numpy(np.stack([shape_item(5, i)[0] for i in range(5)]))
    fast = torch.cat([small.latents(scenes[s : s + 2]) for s in range(0, 5, 2)])  # batches of 2, 2, 1
    reference = small.model.to(torch.float64)
    try:
        with torch.inference_mode():
            x = scenes.permute(0, 3, 1, 2).double() / 127.5 - 1
            exact = reference.encode(x).latents
    finally:
        small.model.to(torch.float32)
    assert (fast.double() - exact).abs().max() < 1e-3 * exact.abs().mean()
    ids = small.encode(scenes.numpy())
    assert np.array_equal(ids, np.concatenate([small.encode(scenes[i : i + 1].numpy()) for i in range(5)]))


def test_encode_tensor_matches_encode(small, images, small_ids):
    ids = small.encode_tensor(torch.from_numpy(images))
    assert ids.dtype == torch.int64 and ids.device == small.device
    assert np.array_equal(ids.numpy(), small_ids.astype(np.int64))


def test_nearest_code_search_agrees_with_diffusers_quantize(small, images):
    with torch.inference_mode():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = small.model.encode(x).latents
        theirs = small.model.quantize(latents)[2][2].view(len(images), -1)
        ours = small.nearest_codes(latents)
    assert len(torch.unique(ours)) > 200
    differ = ours != theirs
    assert differ.float().mean() < 0.01
    if differ.any():  # only near-ties may differ: compare both choices' exact distances
        z = latents.double().permute(0, 2, 3, 1).reshape(len(images), -1, 4)[differ]
        codebook = small.model.quantize.embedding.weight.double()
        gap = (z - codebook[ours[differ]]).norm(dim=1) - (z - codebook[theirs[differ]]).norm(dim=1)
        assert gap.abs().max() < 1e-6


def test_bfloat16_runtime_keeps_the_sha256(small):
    assert MoVQTokenizer.random(seed=0, device="cpu", config=SMALL, dtype="bfloat16").sha256 == small.sha256


# ---------------------------------------------------------------- identity


def test_random_weights_follow_the_seed_and_leave_the_global_rng_alone(small):
    state = torch.get_rng_state()
    assert MoVQTokenizer.random(seed=0, config=SMALL, device="cpu").sha256 == small.sha256
    assert MoVQTokenizer.random(seed=1, config=SMALL, device="cpu").sha256 != small.sha256
    assert torch.equal(torch.get_rng_state(), state)


def test_identity_is_json_and_from_identity_rebuilds_the_same_tokenizer(small, images, small_ids):
    identity = json.loads(json.dumps(small.identity()))
    assert identity["kind"] == "movq" and identity["path"] is None and identity["codebook_size"] == 16384
    rebuilt = MoVQTokenizer.from_identity(identity, device="cpu")
    assert rebuilt.sha256 == small.sha256 and len(small.sha256) == 64
    assert np.array_equal(rebuilt.encode(images[:1]), small_ids[:1])


def test_from_pretrained_reads_a_folder_or_its_parent(small, saved, images, small_ids):
    direct = MoVQTokenizer.from_pretrained(saved / "movq", device="cpu")
    parent = MoVQTokenizer.from_pretrained(str(saved), device="cpu")
    assert direct.sha256 == parent.sha256 == small.sha256
    assert direct.identity()["path"] == parent.identity()["path"] == str((saved / "movq").resolve())
    assert "random_seed" not in direct.identity()
    assert np.array_equal(parent.encode(images[:1]), small_ids[:1])
    assert MoVQTokenizer.from_identity(direct.identity(), device="cpu").sha256 == small.sha256


def test_from_identity_refuses_weights_that_differ(small, tmp_path):
    MoVQTokenizer.random(seed=1, config=SMALL, device="cpu").model.save_pretrained(tmp_path, safe_serialization=True)
    with pytest.raises(TokalignError, match="sha256 differs"):
        MoVQTokenizer.from_identity(small.identity(), path=str(tmp_path), device="cpu")
    with pytest.raises(TokalignError, match="--image-tokenizer-path"):
        MoVQTokenizer.from_identity({"kind": "movq", "sha256": small.sha256, "path": None}, device="cpu")


# ---------------------------------------------------------------- refusals


def test_from_pretrained_names_the_missing_files(saved, tmp_path):
    (tmp_path / "config.json").write_text((saved / "movq" / "config.json").read_text())
    with pytest.raises(TokalignError, match="lacks diffusion_pytorch_model.safetensors"):
        MoVQTokenizer.from_pretrained(tmp_path, device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TokalignError, match="lacks config.json and diffusion_pytorch_model.safetensors"):
        MoVQTokenizer.from_pretrained(empty, device="cpu")
    with pytest.raises(TokalignError, match="does not exist"):
        MoVQTokenizer.from_pretrained(tmp_path / "nowhere", device="cpu")


def test_hub_id_offline_fails_cleanly_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the MoVQ loader tried to reach the network")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(TokalignError, match="could not load MoVQ weights from no-such-owner/no-such-movq .*local folder"):
        MoVQTokenizer.from_pretrained("no-such-owner/no-such-movq", device="cpu")


def test_bad_images_token_ids_and_options_are_refused(small):
    for bad in (np.zeros((1, 128, 128, 3), np.uint8), np.zeros((1, 256, 256, 3), np.float32),
                np.zeros((1, 256, 256, 4), np.uint8), np.zeros((0, 256, 256, 3), np.uint8)):
        with pytest.raises(TokalignError, match="expected uint8 RGB"):
            small.encode(bad)
    with pytest.raises(TokalignError, match="expected uint8 RGB"):
        small.encode_tensor(torch.zeros((1, 256, 256, 3), dtype=torch.int64))
    for bad in (np.full((1, 1024), 16384), np.full(1024, -1), np.zeros((1, 1000), np.int64)):
        with pytest.raises(TokalignError, match="image token"):
            small.decode(bad)
    with pytest.raises(TokalignError, match="integers"):
        small.decode(np.zeros((1, 1024), np.float32))
    with pytest.raises(TokalignError, match="bfloat16 or float32"):
        MoVQTokenizer.random(config=SMALL, device="cpu", dtype="float16")
    with pytest.raises(TokalignError, match="dtype 'float64' is unknown"):
        MoVQTokenizer.random(config=SMALL, device="cpu", dtype="float64")
    with pytest.raises(TokalignError, match="uint16"):
        MoVQTokenizer.random(config={**SMALL, "num_vq_embeddings": 70000}, device="cpu")


def test_decode_accepts_one_image_of_tokens(small, small_ids):
    one = small.decode(small_ids[0])
    assert one.shape == (1, 256, 256, 3) and np.array_equal(one, small.decode(small_ids[:1]))
