"""The image marker: the largest shared offset that keeps the floor of text neighbours."""

from __future__ import annotations

import pytest
import torch

from tokalign.generate.model import image_marker as im


def _rows(seed: int, n: int = 50, vocab: int = 300, d: int = 16):
    """Text rows that vary much more along some directions than others (as LM embeddings do), image rows near them."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.exp(-torch.arange(d) / 8.0)
    text = torch.randn(vocab, d, generator=g) * spread * (1 + torch.rand(vocab, 1, generator=g))
    image = text[torch.randint(0, vocab, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)
    return image, text


def _topk(rows: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    unit = torch.nn.functional.normalize(text.double(), dim=1)
    return (rows.double() @ unit.T).topk(im.TOP_K, dim=1).indices


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b)) / (len(a) * a.shape[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_marker_is_the_largest_scale_that_keeps_the_neighbour_floor(seed):
    image, text = _rows(seed)
    marker = im.MARKERS["auto"](image, text)
    reference = _topk(image, text)
    kept = _overlap(_topk(image + marker.vector, text), reference)
    assert kept >= im.NEIGHBOUR_FLOOR and kept == pytest.approx(marker.overlap)
    assert im.top_k_overlap(image + marker.vector, image, text) == pytest.approx(kept)
    mean_norm = float(text.norm(dim=1).mean())
    assert float(marker.vector.norm()) == pytest.approx(marker.scale * mean_norm, rel=1e-5)
    larger = [s for s in im.SCALES if s > marker.scale]
    if larger:  # the next rung up breaks the floor
        direction = marker.vector / marker.vector.norm() if marker.scale else \
            im.least_variance_direction(torch.nn.functional.normalize(text.double(), dim=1)).float()
        bigger = image + min(larger) * mean_norm * direction
        assert _overlap(_topk(bigger, text), reference) < im.NEIGHBOUR_FLOOR
    assert marker.rows_measured == len(image)


def test_none_keeps_the_rows_and_auto_adds_one_shared_vector():
    image, text = _rows(3)
    marker = im.MARKERS["auto"](image, text)
    assert marker.scale > 0 and torch.allclose(marker.apply(image) - image, marker.vector.expand_as(image), atol=1e-6)
    none = im.MARKERS["none"](image, text)
    assert torch.equal(none.apply(image), image.float()) and none.to_json("none")["scale"] == 0.0


def test_direction_is_where_the_text_rows_vary_least():
    _, text = _rows(4)
    unit = torch.nn.functional.normalize(text.double(), dim=1)
    v = im.least_variance_direction(unit)
    assert float(v.norm()) == pytest.approx(1.0)
    spread = lambda w: float((unit @ w).var())  # noqa: E731
    g = torch.Generator().manual_seed(0)
    others = torch.nn.functional.normalize(torch.randn(200, text.shape[1], generator=g, dtype=torch.float64), dim=1)
    assert all(spread(v) <= spread(w) + 1e-12 for w in others)
    assert v[v.abs().argmax()] > 0  # sign fixed: the same rows give the same marker


def test_many_rows_are_measured_on_an_even_sample():
    image, text = _rows(5, n=im.MEASURED_ROWS + 37)
    marker = im.MARKERS["auto"](image, text)
    assert marker.rows_measured == im.MEASURED_ROWS
