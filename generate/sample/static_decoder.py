"""A static-KV-cache forward over a LLaMA-family ``transformers`` causal LM, for sampling at fixed shapes.

:class:`StaticDecoder` reads the HF model's own modules (embedding, RMSNorms, q/k/v/o projections, MLPs, final
norm) and replaces only what makes HF decoding slow: the KV cache is one preallocated (rows, kv_heads, length,
head_dim) tensor per layer written in place at given slots; cos/sin come from the model's own ``rotary_emb``
(so ``rope_theta`` and rope scaling are HF's), computed once for every position a run can reach and gathered
by position id; attention is SDPA with a boolean mask. A one-token step has fixed shapes and no host work, so
it can be captured in a CUDA graph. Grouped-query attention views the query heads of one KV head as that KV
head's "query length" (no repeated keys). :func:`unsupported_reason` says why a model cannot use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED_TYPES = frozenset({"llama"})
LAYER_PARTS = ("input_layernorm", "post_attention_layernorm", "mlp", "self_attn")
ATTENTION_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj")


def unsupported_reason(model) -> str | None:
    """None when ``model`` is a causal LM this decoder reproduces, else a short reason (for a log line)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_TYPES:
        return f"model type {model_type!r} (the static decoder covers {', '.join(sorted(SUPPORTED_TYPES))})"
    inner = getattr(model, "model", None)
    if inner is None or not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "the model lacks the LLaMA module layout (model.embed_tokens/layers/norm/rotary_emb)"
    for layer in inner.layers:
        if not all(hasattr(layer, a) for a in LAYER_PARTS) or not all(hasattr(layer.self_attn, a)
                                                                       for a in ATTENTION_PARTS):
            return "a decoder layer lacks the LLaMA parts (norms, mlp, q/k/v/o projections)"
    if "dynamic" in str(getattr(inner.rotary_emb, "rope_type", "default")):
        return "dynamic rope scaling (its frequencies depend on the sequence length seen so far)"
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    if model.get_output_embeddings() is None:
        return "no output layer"
    return None


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class StaticDecoder:
    """KV cache and forward for ``rows`` sequences of at most ``length`` tokens at positions below ``positions``.

    :meth:`forward` runs L new tokens per row, writes their keys/values at cache slots ``slots`` (L,) and
    returns the final-normed hidden state of each row's last new token (rows, d_model).
    """

    def __init__(self, model, rows: int, length: int, positions: int):
        inner, config = model.model, model.config
        self.embed, self.layers, self.norm = inner.embed_tokens, list(inner.layers), inner.norm
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = getattr(self.layers[0].self_attn, "scaling", self.head_dim ** -0.5)
        weight = self.embed.weight
        shape = (rows, self.kv_heads, length, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=weight.dtype, device=weight.device) for _ in self.layers]
        self.values = [torch.zeros(shape, dtype=weight.dtype, device=weight.device) for _ in self.layers]
        probe = torch.zeros(1, dtype=weight.dtype, device=weight.device)
        cos, sin = inner.rotary_emb(probe, torch.arange(positions, device=weight.device)[None])
        self.cos, self.sin = cos[0], sin[0]  # (positions, head_dim)
        self.rows, self.length = rows, length

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor, slots: torch.Tensor,
                kv_len: int | None = None) -> torch.Tensor:
        """ids, positions (rows, L); allowed (rows, L, kv) bool over cache slots; slots (L,) int64 -> (rows, d)."""
        x = self.embed(ids)
        cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)  # (rows, 1, L, hd)
        mask = allowed.unsqueeze(1)
        for i, layer in enumerate(self.layers):
            x = x + self._attention(i, layer.self_attn, layer.input_layernorm(x), cos, sin, mask, slots, kv_len)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.norm(x[:, -1])

    def _attention(self, i, attn, x, cos, sin, mask, slots, kv_len):
        rows, new = x.shape[:2]
        q = attn.q_proj(x).view(rows, new, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(rows, new, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(rows, new, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        self.keys[i].index_copy_(2, slots, k)
        self.values[i].index_copy_(2, slots, v)
        keys, values = self.keys[i], self.values[i]
        if kv_len is not None:
            keys, values = keys[:, :, :kv_len], values[:, :, :kv_len]
        group = self.heads // self.kv_heads
        if new == 1:  # the query heads of one KV head stand in for its query length: no repeated keys
            q = q.reshape(rows, self.kv_heads, group, self.head_dim)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling)
            out = out.reshape(rows, 1, self.heads * self.head_dim)
        else:
            keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling)
            out = out.transpose(1, 2).reshape(rows, new, self.heads * self.head_dim)
        return attn.o_proj(out)
