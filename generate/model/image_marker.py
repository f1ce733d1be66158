"""The image marker: one shared vector added to the aligned image rows so that the LM can tell image positions.

Why. The ``mean`` init gives every image id the same input row, so the LM's hidden states at image positions are
alike and far from caption positions: the output head can send them to image ids at once. The aligned rows read
like caption words instead (that is what the fit made them), so image positions look like text to the LM and an
output head that must leave the caption predictions alone cannot favour image ids there. A shared offset on the
image rows gives back the "this is an image" signal while the rows keep their differences.

What it costs. Row ``x_j``'s nearest text tokens are ranked by ``x_j . t_k / |t_k|`` (cosine; the row's own norm
does not change its ranking), so adding ``o`` moves the score of text token ``k`` by ``o . t_k / |t_k|``. The
marker's direction is the one along which the LM's normalized text rows vary least (the smallest eigenvector of
their covariance): it moves every text token's score by nearly the same amount, which disturbs the ranking least.
Its scale is the largest of :data:`SCALES` (in units of the LM's mean text-row norm) whose rows keep, on average,
at least :data:`NEIGHBOUR_FLOOR` of each row's top-:data:`TOP_K` text neighbours (measured on up to
:data:`MEASURED_ROWS` rows, evenly spaced); ``0`` (no marker) always qualifies.

What it buys, measured (README, step-0 section): a lower step-0 image loss where the LM cannot tell image
positions apart by itself (the tests' 2-layer LLaMAs: 8.97 -> 8.50 nats tied, 9.56 -> 9.45 untied; emoji corpus
on SmolLM2: 6.70 -> 6.49; the shapes corpus: 7.26 -> 7.24), and a *slower* start of training: in the demo's
60 steps the held-out image loss ended at 2.07 nats with the marker against 1.46 without, since training must
first undo a component every image row shares (multiplying the marked rows by 4, which changes no neighbour
and lowers the tests' step-0 loss further, ended at 3.84). So ``none`` is the generator's default and ``auto``
is there to study the step-0 effect.

:data:`MARKERS` maps a ``--marker`` name to a rule: ``auto`` (above) or ``none`` (the export's rows unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

NEIGHBOUR_FLOOR = 0.9  #: mean top-k overlap with the fit's own rows that the marked rows must keep
TOP_K = 10
SCALES = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125)  #: tried largest first, x the mean text-row norm
MEASURED_ROWS = 2048  #: image rows (evenly spaced) the overlap is measured on
CHUNK = 512  #: rows per similarity block


@dataclass(frozen=True)
class Marker:
    vector: torch.Tensor  #: (d,) added to every image row (zeros: no marker)
    scale: float  #: |vector| over the LM's mean text-row norm
    overlap: float  #: mean top-k overlap of the marked rows' text neighbours with the unmarked rows'
    rows_measured: int

    def apply(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.float() + self.vector

    def to_json(self, rule: str) -> dict:
        return {"rule": rule, "scale": self.scale, "norm": float(self.vector.norm()),
                "direction": "least-variance direction of the LM's normalized text rows",
                f"top{TOP_K}_overlap": self.overlap, "overlap_rows_measured": self.rows_measured,
                "overlap_floor": NEIGHBOUR_FLOOR}


MARKERS: dict[str, Callable[[torch.Tensor, torch.Tensor], Marker]] = {}


def marker_rule(name: str):
    """Register ``function(image_rows, text_rows) -> Marker`` as ``--marker name``."""
    def register(function):
        MARKERS[name] = function
        return function
    return register


@marker_rule("auto")
def _auto(image_rows: torch.Tensor, text_rows: torch.Tensor) -> Marker:
    text = text_rows.double()
    text_unit = torch.nn.functional.normalize(text, dim=1)
    direction = least_variance_direction(text_unit)
    norm = float(text.norm(dim=1).mean())
    rows = _measured(image_rows)
    base = _scores(rows, text_unit)
    reference = base.topk(TOP_K, dim=1).indices
    shift = (text_unit @ direction).float()  # (V,) what one unit of marker adds to each text token's score
    for scale in SCALES:
        overlap = _overlap((base + scale * norm * shift).topk(TOP_K, dim=1).indices, reference)
        if overlap >= NEIGHBOUR_FLOOR:
            return Marker((scale * norm * direction).float(), scale, overlap, len(rows))
    return Marker(torch.zeros(text_rows.shape[1]), 0.0, 1.0, len(rows))


@marker_rule("none")
def _none(image_rows: torch.Tensor, text_rows: torch.Tensor) -> Marker:
    return Marker(torch.zeros(text_rows.shape[1]), 0.0, 1.0, 0)


def least_variance_direction(unit_rows: torch.Tensor) -> torch.Tensor:
    """(d,) float64 unit vector along which ``unit_rows`` vary least; its largest entry is positive."""
    centred = unit_rows - unit_rows.mean(0)
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    v = vectors[:, 0]
    return v if v[v.abs().argmax()] > 0 else -v


def _measured(rows: torch.Tensor) -> torch.Tensor:
    if len(rows) <= MEASURED_ROWS:
        return rows
    return rows[torch.linspace(0, len(rows) - 1, MEASURED_ROWS).round().long()]


def _scores(rows: torch.Tensor, text_unit: torch.Tensor) -> torch.Tensor:
    """(n, V) ``rows . t_k / |t_k|`` in float32 blocks (the ranking only needs float32)."""
    text = text_unit.float()
    return torch.cat([rows[lo:lo + CHUNK].float() @ text.T for lo in range(0, len(rows), CHUNK)])


def top_k_overlap(rows: torch.Tensor, reference: torch.Tensor, text_rows: torch.Tensor, k: int = TOP_K) -> float:
    """Mean share of each row's top-``k`` nearest text tokens (cosine over ``text_rows``) that the same row of
    ``reference`` also has among its top ``k`` (in blocks: any number of rows)."""
    text_unit = torch.nn.functional.normalize(text_rows.float(), dim=1)
    shared = 0
    for lo in range(0, len(rows), CHUNK):
        mine = _scores(rows[lo:lo + CHUNK], text_unit).topk(k, dim=1).indices
        theirs = _scores(reference[lo:lo + CHUNK], text_unit).topk(k, dim=1).indices
        shared += _shared(mine, theirs)
    return shared / max(len(rows) * k, 1)


def _shared(mine: torch.Tensor, theirs: torch.Tensor) -> int:
    """How many indices the rows of ``mine`` and ``theirs`` (top-k lists) have in common, over all rows."""
    return int((mine[:, :, None] == theirs[:, None, :]).any(-1).sum())


def _overlap(mine: torch.Tensor, theirs: torch.Tensor) -> float:
    return _shared(mine, theirs) / (mine.shape[0] * mine.shape[1])


def _check_names() -> None:
    from tokalign.generate.config import MARKERS as NAMES

    assert set(MARKERS) == set(NAMES), f"marker rules {sorted(MARKERS)} differ from config's {sorted(NAMES)}"


_check_names()
