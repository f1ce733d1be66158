"""Language probes of one causal LM (paper Table 1): held-out perplexity, mass off the text vocabulary, greedy prompts.

Everything runs on token ids the caller made with the generator's tokenizer, whose text ids are the base LM's own,
so the base LM and the generator score the same sequence. For the generator (``layout`` given) the softmax runs
over all of its rows, as it samples; the probe also reports the perplexity renormalized over the text rows only
and the probability mass at text positions on image, structure and padding ids.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from tokalign.align.formats.generator_init import VocabLayout


@torch.no_grad()
def perplexity(model, ids: Sequence[int], window: int, layout: VocabLayout | None = None) -> dict[str, Any]:
    """Perplexity of ``ids`` in non-overlapping windows; each window's first token is context only."""
    device = next(model.parameters()).device
    ids = torch.as_tensor(list(ids), dtype=torch.long)
    nll, nll_text, count = 0.0, 0.0, 0
    mass = {"image": 0.0, "structure": 0.0, "padding": 0.0}
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window]
        if len(chunk) < 2:
            break
        logits = model(chunk[None].to(device)).logits[0, :-1].float()
        targets = chunk[1:].to(device)
        logp = torch.log_softmax(logits, dim=-1)
        token_logp = logp.gather(1, targets[:, None])[:, 0]
        nll -= float(token_logp.sum())
        count += len(targets)
        if layout is not None:
            text_lse = torch.logsumexp(logits[:, :layout.text_rows], dim=-1)
            nll_text -= float((logits.gather(1, targets[:, None])[:, 0] - text_lse).sum())
            probs = logp.exp()
            for name, rows in _off_text_blocks(layout).items():
                mass[name] += float(probs[:, rows.start:rows.stop].sum())
    if count == 0:
        raise ValueError("perplexity needs at least two tokens")
    result: dict[str, Any] = {"tokens_scored": count, "nll": nll / count, "perplexity": math.exp(nll / count)}
    if layout is not None:
        result["perplexity_text_renormalized"] = math.exp(nll_text / count)
        result["mass_off_text"] = {name: value / count for name, value in mass.items()}
        result["mass_off_text"]["total"] = sum(result["mass_off_text"].values())
    return result


def _off_text_blocks(layout: VocabLayout) -> dict[str, range]:
    return {"image": layout.image_ids, "structure": range(layout.special_offset, layout.used_rows),
            "padding": layout.padding_ids}


@torch.no_grad()
def greedy(model, prompt_ids: Sequence[int], new_tokens: int, stop: Callable[[list[int]], bool] | None = None) -> list[int]:
    """Greedy continuation of ``prompt_ids`` (KV cache), ``new_tokens`` ids at most; stops early when ``stop(ids)``."""
    device = next(model.parameters()).device
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    inputs = torch.as_tensor([list(prompt_ids)], dtype=torch.long, device=device)
    out = model(inputs, use_cache=True, logits_to_keep=1)
    generated: list[int] = []
    for _ in range(new_tokens):
        token = int(out.logits[0, -1].argmax())
        generated.append(token)
        if stop is not None and stop(generated):
            break
        cache = out.cache if hasattr(out, "cache") else out.past_key_values  # transformers 5 | 4.x
        out = model(torch.tensor([[token]], device=device), use_cache=True, logits_to_keep=1, **{keyword: cache})
    return generated


@dataclass(frozen=True)
class IdRenderer:
    """Readable text of generated ids: text through the tokenizer, other ids as ``<image 17>``, ``</doc>``, ..."""

    tokenizer: Any
    layout: VocabLayout | None = None

    def __call__(self, ids: Sequence[int]) -> str:
        parts: list[str] = []
        run: list[int] = []
        for token in ids:
            if self.layout is None or token < self.layout.text_rows:
                run.append(int(token))
                continue
            if run:
                parts.append(self.tokenizer.decode(run))
                run = []
            parts.append(self._other(int(token)))
        if run:
            parts.append(self.tokenizer.decode(run))
        return "".join(parts)

    def _other(self, token: int) -> str:
        layout = self.layout
        if token in layout.image_ids:
            return f"<image {token - layout.image_offset}>"
        names = {i: name for name, i in layout.special_ids.items()}
        return names.get(token, f"<padding row {token}>")
