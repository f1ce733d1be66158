"""The fast sampling path: a static KV cache, image-row logits only, and (on CUDA) one captured decode step.

:class:`FastSampler` gives the same tokens as :func:`tokalign.generate.sample.sampler.sample_image_ids` (the
reference, also the path for models :func:`~.static_decoder.unsupported_reason` refuses) for the same prefixes
and uniforms, up to float rounding. What it does differently:

* the output layer is evaluated for the image rows only (``W[image_offset:special_offset]``): inside the image
  segment nothing else can be drawn, so the reference's ``-inf`` bias over the other rows is implied;
* everything a step reads lives on the device, prepared once per batch: the cache slot, the position ids, the
  attention mask (derived in the step from a step counter tensor), the uniforms; a step draws its token, writes
  it into the output and the next step's input, and advances the counter, so no step needs the host;
* on CUDA the first two decode steps run eagerly on a side stream (warm-up), then one step is captured in a
  ``torch.cuda.CUDAGraph`` and replayed for the rest. A failed capture logs a warning and the run continues
  eagerly on the same static cache. The cache and graph are kept for the next batch of the same shape.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.sample.constraint import check_image_ids
from tokalign.generate.sample.distribution import sample_next
from tokalign.generate.sample.prefix import PaddedBatch, left_pad
from tokalign.generate.sample.sampler import Settings, mix, sample_image_ids
from tokalign.generate.sample.static_decoder import StaticDecoder, unsupported_reason

log = logging.getLogger(__name__)
WARMUP_STEPS = 2  # eager steps on a side stream before the capture (lazy CUDA/cuBLAS initialisation)


class _Run:
    """The device state of one batch shape (rows, prefix width, steps): cache, step inputs, outputs, graph."""

    def __init__(self, model, layout: VocabLayout, settings: Settings, rows: int, cond_rows: int, width: int,
                 steps: int):
        head = model.get_output_embeddings()
        device = head.weight.device
        self.layout, self.settings, self.cond_rows, self.width, self.steps = layout, settings, cond_rows, width, steps
        self.guided = rows != cond_rows
        self.decoder = StaticDecoder(model, rows, width + steps, width + steps)
        self.weight = head.weight[layout.image_offset:layout.special_offset]
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else bias[layout.image_offset:layout.special_offset]
        self.step = torch.zeros(1, dtype=torch.long, device=device)
        self.token = torch.zeros(rows, dtype=torch.long, device=device)
        self.out = torch.zeros(cond_rows, steps, dtype=torch.long, device=device)
        self.u = torch.zeros(cond_rows, steps, dtype=torch.float64, device=device)
        self.base = torch.zeros(rows, dtype=torch.long, device=device)
        self.keep = torch.zeros(rows, width + steps, dtype=torch.bool, device=device)
        self.cols = torch.arange(width + steps, device=device)
        self.graph: torch.cuda.CUDAGraph | None | bool = None  # False: capture failed, stay eager
        self.capture_seconds = 0.0

    def load(self, batch: PaddedBatch, uniforms: torch.Tensor) -> None:
        """Copy one batch's prefix mask, positions and uniforms into the step inputs (in place)."""
        self.keep[:, :self.width].copy_(batch.attention_mask.bool())
        self.base.copy_(batch.last_position[:, 0])
        self.u.copy_(uniforms)
        self.step.zero_()

    def prefill(self, batch: PaddedBatch) -> None:
        """Run the prefixes (filling cache slots 0..width-1) and draw step 0."""
        device, width = self.step.device, self.width
        keep = batch.attention_mask.bool().to(device)
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        eye = torch.eye(width, dtype=torch.bool, device=device)
        allowed = causal & keep[:, None, :] | eye  # a padding query sees itself only (finite, never used)
        hidden = self.decoder.forward(batch.ids.to(device), batch.position_ids.to(device), allowed,
                                      torch.arange(width, device=device), kv_len=width)
        self._emit(hidden)

    def decode_step(self, kv_len: int | None = None) -> None:
        """Feed the last drawn token at cache slot ``width - 1 + step``, draw the next; all on the device."""
        slot = self.step + (self.width - 1)
        allowed = self.keep | (self.cols >= self.width) & (self.cols <= slot)
        if kv_len is not None:
            allowed = allowed[:, :kv_len]
        hidden = self.decoder.forward(self.token[:, None], (self.base + self.step)[:, None], allowed[:, None], slot,
                                      kv_len=kv_len)
        self._emit(hidden)

    def _emit(self, hidden: torch.Tensor) -> None:
        s = self.settings
        logits = F.linear(hidden, self.weight, self.bias)
        logits = mix(logits, self.cond_rows, s.cfg_scale) if self.guided else logits.float()
        u = self.u.index_select(1, self.step).squeeze(1)
        token = sample_next(logits, u, s.temperature, s.top_k, s.top_p) + self.layout.image_offset
        self.out.index_copy_(1, self.step, token[:, None])
        self.token.copy_(token.repeat(2) if self.guided else token)
        self.step.add_(1)

    def decode(self, use_graph: bool) -> None:
        """Steps 1..steps-1: replayed from a captured graph where possible, else eagerly."""
        done = 1
        if use_graph and self.graph is None:
            done += self._warm_up_and_capture(min(WARMUP_STEPS, self.steps - 1))
        if isinstance(self.graph, torch.cuda.CUDAGraph) and use_graph:
            for _ in range(done, self.steps):
                self.graph.replay()
            return
        for step in range(done, self.steps):  # eager: attend over the filled slots only
            self.decode_step(kv_len=self.width + step)

    def _warm_up_and_capture(self, warmup: int) -> int:
        """Run ``warmup`` real steps on a side stream, then capture one step; returns the steps run.

        Any failure (no CUDA, a kernel that cannot be captured) leaves ``graph`` False with a warning; the
        steps run so far count, the rest run eagerly.
        """
        started, done = time.perf_counter(), 0
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self.decode_step()
                    done += 1
            torch.cuda.current_stream().wait_stream(side)
            if done < self.steps - 1:  # else nothing is left to replay: capture on a later, longer batch
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.decode_step()
                self.graph = graph
        except Exception as exc:  # any capture failure: the eager static-cache step is always correct
            self.graph = False
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
            log.warning("CUDA graph capture of the decode step failed (%s: %s); decoding eagerly with the static "
                        "cache", type(exc).__name__, message)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        self.capture_seconds = time.perf_counter() - started
        return done


class FastSampler:
    """Sample batches like :func:`~.sampler.sample_image_ids`; one static cache (and graph) reused per shape.

    ``graphs`` (default: on for a CUDA model) captures the decode step. Raises ``ValueError`` for a model the
    static decoder does not cover (check :func:`~.static_decoder.unsupported_reason` first).
    """

    def __init__(self, model, layout: VocabLayout, settings: Settings = Settings(), *, guided: bool | None = None,
                 graphs: bool | None = None):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the fast sampler does not cover this model: {reason}")
        self.model, self.layout, self.settings = model, layout, settings
        self.guided = settings.cfg_scale != 1.0 if guided is None else guided
        device = model.get_output_embeddings().weight.device
        self.graphs = device.type == "cuda" if graphs is None else bool(graphs) and device.type == "cuda"
        self._run: _Run | None = None

    @property
    def capture_seconds(self) -> float:
        """Seconds the warm-up and graph capture of the current shape took (0 when eager)."""
        return self._run.capture_seconds if self._run is not None else 0.0

    @torch.inference_mode()
    def __call__(self, prefixes: list[list[int]], *, steps: int, uniforms: torch.Tensor,
                 unconditional: list[int] | None = None, width: int | None = None) -> torch.Tensor:
        """(B, steps) int64 image-block ids, row i drawn with ``uniforms[i]``; ``width`` pads the prefixes wider."""
        rows = len(prefixes)
        if self.guided and unconditional is None:
            raise ValueError("guided sampling needs the unconditional prefix")
        batch = left_pad(list(prefixes) + ([list(unconditional)] * rows if self.guided else []), self.layout.pad_id,
                         width)
        shape = (len(batch.ids), rows, batch.ids.shape[1], steps)
        if self._run is None or (len(self._run.token), self._run.cond_rows, self._run.width, self._run.steps) != shape:
            self._run = None  # free the previous shape's cache before allocating the next
            self._run = _Run(self.model, self.layout, self.settings, *shape)
        run = self._run
        run.load(batch, uniforms)
        run.prefill(batch)
        run.decode(self.graphs)
        out = run.out.clone()
        check_image_ids(out, self.layout)
        return out


def sample_image_ids_fast(model, prefixes: list[list[int]], *, layout: VocabLayout, steps: int,
                          uniforms: torch.Tensor, settings: Settings = Settings(),
                          unconditional: list[int] | None = None, guided: bool | None = None,
                          graphs: bool | None = None) -> torch.Tensor:
    """One batch through a fresh :class:`FastSampler` (same arguments as the reference sampler)."""
    sampler = FastSampler(model, layout, settings, guided=guided, graphs=graphs)
    return sampler(prefixes, steps=steps, uniforms=uniforms, unconditional=unconditional)


def batch_sampler(model, layout: VocabLayout, settings: Settings, *, guided: bool | None = None):
    """``(sample, name)``: a callable ``sample(prefixes, steps=, uniforms=, unconditional=, width=)`` and "fast"
    or "reference"; the reference sampler serves models the static decoder does not cover (logged once)."""
    reason = unsupported_reason(model)
    if reason is None:
        return FastSampler(model, layout, settings, guided=guided), "fast"
    log.info("sampling with the reference path (HF forward per step): the fast path does not cover %s", reason)

    def sample(prefixes, *, steps, uniforms, unconditional=None, width=None):
        return sample_image_ids(model, prefixes, layout=layout, steps=steps, uniforms=uniforms, settings=settings,
                                unconditional=unconditional, guided=guided)

    return sample, "reference"
