"""Split embedding tables: a block of the LM's own rows (``base``) and a block of the new rows (``new``).

Two uses:

* the ``new-rows`` freeze preset: :func:`split_new_rows` replaces the model's input embedding (and its output
  layer) by modules holding two parameters, ``base`` (rows ``0..split-1``, ``requires_grad=False``) and ``new``
  (rows ``split..``). The base block is never handed to the optimizer, so no gradient, weight decay, sharding or
  mixed-precision step can touch it: the LM's rows stay bit-identical. A tied model stays tied: the output layer
  uses the same two parameters.
* a head untied for the new rows only: :func:`untie_new_rows` gives a tied model a split embedding whose
  ``base`` (the text rows, trainable) is shared with the output layer, while the output layer's ``new`` block is
  its own parameter. The text rows stay tied (input = output, one parameter); the new ids' output rows can
  differ from their input rows. ``config.tie_word_embeddings`` becomes False (the saved model is untied).

The forward pass gives exactly the plain model's outputs (the blocks are concatenated per forward).
:func:`merge_split_rows` turns the model back into a plain one (single ``nn.Embedding`` / ``nn.Linear``, tied
again where both blocks were shared) before ``save_pretrained``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitEmbedding(nn.Module):
    """``nn.Embedding`` over ``cat([base, new])``; ``base`` is frozen."""

    def __init__(self, weight: torch.Tensor, split: int, padding_idx: int | None = None, *,
                 freeze_base: bool = True) -> None:
        super().__init__()
        self.base = nn.Parameter(weight[:split].detach().clone(), requires_grad=not freeze_base)
        self.new = nn.Parameter(weight[split:].detach().clone())
        self.padding_idx = padding_idx

    @property
    def num_embeddings(self) -> int:
        return self.base.shape[0] + self.new.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.base.shape[1]

    def full_weight(self) -> torch.Tensor:
        return torch.cat([self.base, self.new])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.full_weight())


class SplitLinear(nn.Module):
    """An output layer over ``cat([base, new])`` (logits in the plain layer's order)."""

    def __init__(self, base: nn.Parameter, new: nn.Parameter, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.base, self.new = base, new
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @property
    def out_features(self) -> int:
        return self.base.shape[0] + self.new.shape[0]

    @property
    def in_features(self) -> int:
        return self.base.shape[1]

    def full_weight(self) -> torch.Tensor:
        return torch.cat([self.base, self.new])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.full_weight(), self.bias)


def is_split(model) -> bool:
    return isinstance(model.get_input_embeddings(), SplitEmbedding)


def untie_new_rows(model, split: int) -> bool:
    """Give a tied plain model its own output rows from ``split`` on (module docstring); False if not tied."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or is_split(model) or head.weight is not embedding.weight:
        return False
    assert 0 < split < embedding.weight.shape[0], "split must leave rows on both sides"
    new_embedding = SplitEmbedding(embedding.weight, split, embedding.padding_idx, freeze_base=False)
    new_embedding.base.requires_grad_(embedding.weight.requires_grad)
    new_embedding.new.requires_grad_(embedding.weight.requires_grad)
    model.set_input_embeddings(new_embedding)
    own = nn.Parameter(new_embedding.new.detach().clone(), requires_grad=new_embedding.new.requires_grad)
    model.set_output_embeddings(SplitLinear(new_embedding.base, own, head.bias))
    model.config.tie_word_embeddings = False
    return True


def split_new_rows(model, split: int) -> None:
    """Replace the embedding (and output layer) by split modules; rows ``>= split`` stay trainable."""
    if is_split(model):
        return
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is embedding.weight
    assert 0 < split < embedding.weight.shape[0], "split must leave rows on both sides"
    new_embedding = SplitEmbedding(embedding.weight, split, embedding.padding_idx)
    model.set_input_embeddings(new_embedding)
    if head is None:
        return
    if tied:
        model.set_output_embeddings(SplitLinear(new_embedding.base, new_embedding.new, head.bias))
    else:
        base = nn.Parameter(head.weight[:split].detach().clone(), requires_grad=False)
        model.set_output_embeddings(SplitLinear(base, nn.Parameter(head.weight[split:].detach().clone()), head.bias))


def merge_split_rows(model) -> None:
    """Turn split modules back into a plain ``nn.Embedding`` / ``nn.Linear`` (tied again if they shared rows)."""
    if not is_split(model):
        return
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    plain = nn.Embedding(embedding.num_embeddings, embedding.embedding_dim, padding_idx=embedding.padding_idx,
                         device=embedding.base.device, dtype=embedding.base.dtype)
    with torch.no_grad():
        plain.weight.copy_(embedding.full_weight())
    model.set_input_embeddings(plain)
    if head is None:
        return
    linear = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None,
                       device=head.base.device, dtype=head.base.dtype)
    if head.base is embedding.base and head.new is embedding.new:
        linear.weight = plain.weight
    else:
        with torch.no_grad():
            linear.weight.copy_(head.full_weight())
    if head.bias is not None:
        with torch.no_grad():
            linear.bias.copy_(head.bias)
    model.set_output_embeddings(linear)
