"""The k-means patch tokenizer: exact encoding, faithful decoding, safe files."""

from __future__ import annotations

import numpy as np
import pytest

import tokalign.align.image_tokenizers.kmeans_fit as kfit
import tokalign.align.image_tokenizers.kmeans as km
from tokalign.align.errors import TokalignError
from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer
from tokalign.align.sources.shapes import shape_item


def scenes(seed: int, count: int, size: int = 256) -> np.ndarray:
    return np.stack([shape_item(seed, i, size)[0] for i in range(count)])


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return scenes(0, 40)


@pytest.fixture(scope="module")
def tokenizer(train) -> PatchKMeansTokenizer:
    return PatchKMeansTokenizer.fit(train, codebook_size=256, iterations=8, seed=0)


def brute_force_tokens(tokenizer: PatchKMeansTokenizer, images: np.ndarray) -> np.ndarray:
    patches = km._to_patches(images, tokenizer.patch).astype(np.float64)
    codebook = tokenizer.codebook.astype(np.float64)
    # float64 ||p||^2 - 2 p.c + ||c||^2 is exact to ~1e-9 here, far below any real gap
    dist = (patches**2).sum(1)[:, None] - 2 * patches @ codebook.T + (codebook**2).sum(1)[None]
    return dist.argmin(1).reshape(len(images), -1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255.0**2 / mse))


def test_fit_gives_the_codebook_size_asked_for_and_movq_layout(tokenizer):
    assert tokenizer.codebook.shape == (256, 192) and tokenizer.codebook.dtype == np.float32
    assert tokenizer.codebook_size == 256
    assert tokenizer.grid == (32, 32) and tokenizer.tokens_per_image == 1024
    assert tokenizer.identity() == {
        "kind": "kmeans",
        "codebook_size": 256,
        "grid": [32, 32],
        "patch": 8,
        "image_size": 256,
        "sha256": tokenizer.sha256,
    }
    assert len(tokenizer.sha256) == 64


def test_encode_gives_uint16_tokens_below_the_codebook_size(tokenizer):
    tokens = tokenizer.encode(scenes(1, 3))
    assert tokens.shape == (3, 1024) and tokens.dtype == np.uint16
    assert tokens.max() < tokenizer.codebook_size
    assert len(np.unique(tokens)) > 10


def test_encode_equals_brute_force_nearest_centroid(tokenizer):
    images = scenes(2, 3)
    assert np.array_equal(tokenizer.encode(images), brute_force_tokens(tokenizer, images))


def test_encode_equals_brute_force_on_noisy_images_and_a_random_codebook():
    rng = np.random.default_rng(5)
    codebook = rng.uniform(0, 255, size=(300, 4 * 4 * 3)).astype(np.float32)
    tokenizer = PatchKMeansTokenizer(codebook, patch=4, image_size=32)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(tokenizer.encode(images), brute_force_tokens(tokenizer, images))


def test_exact_ties_go_to_the_lowest_index():
    rng = np.random.default_rng(1)
    codebook = rng.uniform(0, 255, size=(50, 12)).astype(np.float32)
    codebook[40] = codebook[7]  # duplicate centroid: 7 must always win
    tokenizer = PatchKMeansTokenizer(codebook, patch=2, image_size=8)
    images = np.clip(np.rint(codebook[[7, 40, 3, 7]]), 0, 255).astype(np.uint8).reshape(1, 2, 2, 2, 2, 3)
    images = images.transpose(0, 1, 3, 2, 4, 5).reshape(1, 4, 4, 3)
    images = np.tile(images, (1, 2, 2, 1))
    tokens = tokenizer.encode(images)
    assert 40 not in tokens and np.array_equal(tokens, brute_force_tokens(tokenizer, images))


def test_encoding_in_chunks_gives_the_same_tokens(tokenizer, monkeypatch):
    images = scenes(3, 5)
    whole = tokenizer.encode(images)
    monkeypatch.setattr(km, "_ENCODE_BATCH", 2)
    monkeypatch.setattr(km, "_SEARCH_BLOCK", 100)
    assert np.array_equal(tokenizer.encode(images), whole)
    assert np.array_equal(tokenizer.encode(images[4]), whole[4:])  # a single (S, S, 3) image


def test_tokens_follow_row_major_grid_order():
    codebook = np.stack([np.zeros(192), np.full(192, 255.0)]).astype(np.float32)
    tokenizer = PatchKMeansTokenizer(codebook)
    image = np.zeros((1, 256, 256, 3), dtype=np.uint8)
    image[0, 8:16, 24:32] = 255  # the patch in grid row 1, column 3
    tokens = tokenizer.encode(image)
    assert np.flatnonzero(tokens[0]).tolist() == [1 * 32 + 3]


def test_round_trip_reconstructs_shape_scenes(tokenizer):
    images = scenes(4, 4)
    restored = tokenizer.decode(tokenizer.encode(images))
    assert restored.shape == images.shape and restored.dtype == np.uint8
    assert psnr(restored, images) > 25


def test_fewer_unique_patches_than_codes_keeps_every_patch_exactly():
    images = scenes(6, 2, size=64)
    tokenizer = PatchKMeansTokenizer.fit(images, codebook_size=1000, seed=0)
    assert tokenizer.codebook_size == 1000 and tokenizer.image_size == 64
    assert np.array_equal(tokenizer.decode(tokenizer.encode(images)), images)


def test_fit_is_deterministic_for_a_seed(train):
    first = PatchKMeansTokenizer.fit(train[:20], codebook_size=300, iterations=5, seed=3)
    again = PatchKMeansTokenizer.fit(train[:20], codebook_size=300, iterations=5, seed=3)
    other = PatchKMeansTokenizer.fit(train[:20], codebook_size=300, iterations=5, seed=4)
    assert np.array_equal(first.codebook, again.codebook) and first.sha256 == again.sha256
    assert first.sha256 != other.sha256


def test_fit_on_a_priority_sample_still_reconstructs(train):
    tokenizer = PatchKMeansTokenizer.fit(train, codebook_size=256, iterations=8, max_training_patches=1500)
    images = scenes(4, 4)
    assert psnr(tokenizer.decode(tokenizer.encode(images)), images) > 25


def test_code_shares_sum_to_k_within_cell_sizes():
    sizes = np.array([5, 0, 100, 1, 40])
    score = np.array([0.0, 0.0, 9.0, 5.0, 1.0])
    for k in (4, 10, 60, 146):
        shares = kfit._allocate(score, sizes, k)
        assert shares.sum() == k and (shares <= sizes).all()
        assert (shares[sizes > 0] >= 1).all() and shares[1] == 0
    assert kfit._allocate(score, sizes, 60)[2] > kfit._allocate(score, sizes, 60)[4]


def test_patch_deduplication_is_exact_even_when_hashes_collide(monkeypatch):
    rows = np.random.default_rng(0).integers(0, 3, size=(500, 16), dtype=np.uint8)
    expected = np.unique(rows, axis=0, return_counts=True)[1]
    for words in (km._HASH_WORDS, np.zeros_like(km._HASH_WORDS)):  # zeros: every row hashes alike
        monkeypatch.setattr(km, "_HASH_WORDS", words)
        unique, inverse, counts = km._unique_rows(rows)
        assert np.array_equal(unique[inverse], rows)
        assert sorted(counts) == sorted(expected) and len(np.unique(unique, axis=0)) == len(unique)


def test_save_and_load_preserve_identity_and_tokens(tokenizer, tmp_path):
    path = tmp_path / "sub" / "tokenizer.safetensors"
    tokenizer.save(path)
    loaded = PatchKMeansTokenizer.load(path)
    assert loaded.identity() == tokenizer.identity()
    assert np.array_equal(loaded.codebook, tokenizer.codebook)
    images = scenes(7, 2)
    assert np.array_equal(loaded.encode(images), tokenizer.encode(images))
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.safetensors"]  # no temp files left


def one_line_error(call, *match: str) -> str:
    with pytest.raises(TokalignError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in match), message
    return message


def test_a_damaged_tokenizer_file_is_refused(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.safetensors"
    tokenizer.save(path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the codebook bytes
    path.write_bytes(bytes(data))
    one_line_error(lambda: PatchKMeansTokenizer.load(path), "sha256", str(path))
    path.write_bytes(bytes(data[: len(data) // 2]))
    one_line_error(lambda: PatchKMeansTokenizer.load(path), "damaged")
    path.write_bytes(b"not a safetensors file")
    one_line_error(lambda: PatchKMeansTokenizer.load(path), "damaged")


def test_a_missing_or_foreign_file_is_refused(tmp_path):
    one_line_error(lambda: PatchKMeansTokenizer.load(tmp_path / "absent.safetensors"), "does not exist")
    from safetensors.numpy import save_file

    foreign = tmp_path / "table.safetensors"
    save_file({"codebook": np.zeros((4, 192), np.float32)}, str(foreign), metadata={"kind": "movq"})
    one_line_error(lambda: PatchKMeansTokenizer.load(foreign), "not a k-means tokenizer")


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 128, 128, 3), np.uint8),  # wrong size
        np.zeros((2, 256, 256, 3), np.float32),  # wrong dtype
        np.zeros((2, 256, 256), np.uint8),  # no channels
        np.zeros((0, 256, 256, 3), np.uint8),  # empty batch
    ],
)
def test_encode_refuses_malformed_images(tokenizer, images):
    one_line_error(lambda: tokenizer.encode(images), "expected uint8 RGB")


@pytest.mark.parametrize(
    "tokens, problem",
    [
        (np.full((1, 1024), 256), "codebook has 256 codes"),
        (np.full((1, 1024), -1), "codebook has 256 codes"),
        (np.zeros((1, 1000), np.int64), "shape"),
        (np.zeros((1, 1024), np.float32), "dtype"),
    ],
)
def test_decode_refuses_bad_tokens(tokenizer, tokens, problem):
    one_line_error(lambda: tokenizer.decode(tokens), problem)


def test_constructor_and_fit_refuse_bad_settings(train):
    one_line_error(lambda: PatchKMeansTokenizer(np.zeros((4, 100), np.float32)), "expected (K, 192)")
    one_line_error(lambda: PatchKMeansTokenizer(np.zeros((4, 192), np.float32), image_size=100), "multiple")
    one_line_error(lambda: PatchKMeansTokenizer.fit(train[:2], codebook_size=70000), "out of range")
    one_line_error(lambda: PatchKMeansTokenizer.fit(train[:2], patch=7), "multiple")
    one_line_error(lambda: PatchKMeansTokenizer.fit(train[:2], codebook_size=64, max_training_patches=10), "raise it")


def test_priority_sample_keeps_exactly_cap_rows_and_every_heavy_row():
    rng = np.random.default_rng(0)
    x = np.arange(1000)[:, None]
    w = np.ones(1000)
    w[:5] = 1e6  # five very frequent patches
    kept, weights = kfit.priority_sample(x, w, 100, rng)
    assert len(kept) == 100 and set(range(5)) <= set(kept[:, 0].tolist())
    light = weights[kept[:, 0] >= 5]
    assert np.allclose(light, light[0]) and light[0] > 5  # each stands for ~10 unkept rows
    assert (weights >= 1).all() and abs(weights.sum() / w.sum() - 1) < 0.01
