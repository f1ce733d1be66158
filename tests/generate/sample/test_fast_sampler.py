"""The fast sampler (static cache, image-row head) against the reference sampler: the same tokens in float32.

Models: the tiny LLaMA of ``tests/helpers/tiny_llama`` (every weight moved off its init, norms not one) over a
tokalign vocabulary layout, with GQA (4 heads / 2 KV heads); prompts of uneven lengths (left padding).
"""

from __future__ import annotations

import pytest
import torch

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.sample import prefix as px
from tokalign.generate.sample.distribution import draw, filter_logits
from tokalign.generate.sample.fast_sampler import FastSampler, batch_sampler, sample_image_ids_fast
from tokalign.generate.sample.sampler import Settings, sample_image_ids
from tokalign.generate.sample.seeds import uniforms
from tokalign.generate.sample.static_decoder import StaticDecoder, unsupported_reason

LAYOUT = VocabLayout(40, 24)
STEPS = 20
SETTINGS = (Settings(), Settings(cfg_scale=3.0), Settings(top_k=5), Settings(top_p=0.8, cfg_scale=2.0),
            Settings(temperature=0.6, top_k=9, top_p=0.9, cfg_scale=4.0), Settings(temperature=1.7, cfg_scale=0.0))


def _model(seed: int = 0, **config):
    from tiny_llama import tiny_llama_model

    model = tiny_llama_model(LAYOUT.total_rows, tied=False, seed=seed).eval()
    for key, value in config.items():
        setattr(model.config, key, value)
    return model


def _prefixes(lengths=(3, 0, 7, 1), seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [px.text_prefix(torch.randint(0, LAYOUT.text_rows, (n,), generator=g).tolist(), LAYOUT) for n in lengths]


def _both(model, settings, prefixes=None, seeds=None, **kw):
    prefixes = prefixes or _prefixes()
    u = uniforms(seeds or list(range(len(prefixes))), STEPS)
    args = dict(layout=LAYOUT, steps=STEPS, uniforms=u, settings=settings,
                unconditional=px.unconditional_prefix(LAYOUT))
    return sample_image_ids(model, prefixes, **args, **kw), sample_image_ids_fast(model, prefixes, **args)


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"T{s.temperature}-k{s.top_k}-p{s.top_p}-cfg{s.cfg_scale}")
def test_same_tokens_as_the_cached_and_the_uncached_reference(model, settings):
    cached, fast = _both(model, settings)
    uncached, _ = _both(model, settings, use_cache=False)
    assert torch.equal(fast, cached) and torch.equal(fast, uncached)
    assert ((fast >= LAYOUT.image_offset) & (fast < LAYOUT.special_offset)).all()
    assert len({tuple(row) for row in fast.tolist()}) == len(fast)  # the rows really differ


def test_guidance_forced_on_at_scale_one_is_conditional_sampling(model):
    u = uniforms([3, 4], STEPS)
    args = dict(layout=LAYOUT, steps=STEPS, uniforms=u, settings=Settings(),
                unconditional=px.unconditional_prefix(LAYOUT))
    plain = sample_image_ids_fast(model, _prefixes((2, 5)), **args)
    assert torch.equal(plain, sample_image_ids_fast(model, _prefixes((2, 5)), guided=True, **args))


def test_rope_scaling_and_theta_come_from_the_model():
    """A model with linear rope scaling and another theta: the fast path still matches the reference."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=LAYOUT.total_rows, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256,
                         rope_theta=500.0, rope_scaling={"rope_type": "linear", "factor": 3.0})
    torch.manual_seed(1)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)
    assert unsupported_reason(model) is None
    cached, fast = _both(model, Settings(cfg_scale=2.5))
    assert torch.equal(cached, fast)


def test_one_sampler_over_batches_of_one_shape_and_then_another(model):
    """The cache and step inputs are reloaded per batch: each batch gives its own reference tokens."""
    settings = Settings(cfg_scale=3.0, top_k=8)
    sampler = FastSampler(model, LAYOUT, settings)
    unconditional = px.unconditional_prefix(LAYOUT)
    for lengths, seeds, width in (((3, 6), [1, 2], 12), ((0, 1), [3, 4], 12), ((4, 4, 4), [5, 6, 7], None)):
        prefixes = _prefixes(lengths, seed=seeds[0])
        u = uniforms(seeds, STEPS)
        got = sampler(prefixes, steps=STEPS, uniforms=u, unconditional=unconditional, width=width)
        want = sample_image_ids(model, prefixes, layout=LAYOUT, steps=STEPS, uniforms=u, settings=settings,
                                unconditional=unconditional)
        assert torch.equal(got, want)


def test_a_one_token_image(model):
    cached, fast = (f(model, _prefixes((2,)), layout=LAYOUT, steps=1, uniforms=uniforms([0], 1),
                      settings=Settings(cfg_scale=2.0), unconditional=px.unconditional_prefix(LAYOUT))
                    for f in (sample_image_ids, sample_image_ids_fast))
    assert fast.shape == (1, 1) and torch.equal(cached, fast)


@torch.inference_mode()
def test_decoder_logits_match_hf_at_every_step_teacher_forced(model):
    """Teacher-forced: the static decoder's image-row logits equal HF's full forward at every position."""
    prefixes = _prefixes((5, 0, 2))
    batch = px.left_pad(prefixes, LAYOUT.pad_id)
    tokens = torch.randint(LAYOUT.image_offset, LAYOUT.special_offset, (len(prefixes), 6))
    ours = teacher_forced_logits(model, batch, tokens)
    ids = torch.cat([batch.ids, tokens], 1)
    mask = torch.cat([batch.attention_mask, torch.ones_like(tokens)], 1)
    positions = torch.cat([batch.position_ids, batch.last_position + torch.arange(1, 7)], 1)
    hf = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    width = batch.ids.shape[1]
    reference = hf[:, width - 1:width + 5, LAYOUT.image_offset:LAYOUT.special_offset].float()
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def teacher_forced_logits(model, batch, tokens: torch.Tensor) -> torch.Tensor:
    """(rows, steps, codebook) image-row logits of the static decoder after the prefix and each forced token."""
    rows, width = batch.ids.shape
    steps = tokens.shape[1]
    device = model.get_output_embeddings().weight.device
    decoder = StaticDecoder(model, rows, width + steps, width + steps)
    weight = model.get_output_embeddings().weight[LAYOUT.image_offset:LAYOUT.special_offset]
    keep = batch.attention_mask.bool().to(device)
    allowed = torch.ones(width, width, dtype=torch.bool, device=device).tril() & keep[:, None] | torch.eye(
        width, dtype=torch.bool, device=device)
    hidden = [decoder.forward(batch.ids.to(device), batch.position_ids.to(device), allowed,
                              torch.arange(width, device=device), kv_len=width)]
    for step in range(steps - 1):
        keep = torch.cat([keep, torch.ones(rows, 1, dtype=torch.bool, device=device)], 1)
        slot = torch.tensor([width + step], device=device)
        position = (batch.last_position + step + 1).to(device)
        hidden.append(decoder.forward(tokens[:, step:step + 1].to(device), position, keep[:, None], slot,
                                      kv_len=width + step + 1))
    return torch.stack([torch.nn.functional.linear(h, weight).float() for h in hidden], 1)


def test_models_the_decoder_does_not_cover_use_the_reference_path():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=LAYOUT.total_rows, n_embd=32, n_layer=1, n_head=2,
                                      n_positions=128)).eval()
    assert "gpt2" in unsupported_reason(gpt2)
    with pytest.raises(ValueError, match="does not cover"):
        FastSampler(gpt2, LAYOUT)
    sample, name = batch_sampler(gpt2, LAYOUT, Settings(cfg_scale=2.0))
    u, prefixes = uniforms([0, 1], STEPS), _prefixes((1, 4))
    got = sample(prefixes, steps=STEPS, uniforms=u, unconditional=px.unconditional_prefix(LAYOUT), width=9)
    want = sample_image_ids(gpt2, prefixes, layout=LAYOUT, steps=STEPS, uniforms=u, settings=Settings(cfg_scale=2.0),
                            unconditional=px.unconditional_prefix(LAYOUT))
    assert name == "reference" and torch.equal(got, want)
    assert batch_sampler(_model(), LAYOUT, Settings())[1] == "fast"


# ------------------------------------------------------------------ where bf16 may differ (CPU, and CUDA with graphs)
# In bf16 the static decoder and HF's forward round differently, so a draw can differ where the row's uniform
# falls within that rounding of a boundary of the cumulative distribution. Teacher-forced along the reference's
# own tokens (the same context at every step), each step's image-row logits are compared within bf16
# tolerance, and every step whose draws differ must be such a near-tie. The free-running token agreement is
# printed (pytest -s).
BF16_STEPS = 24
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _reference_logits(model, batch, tokens):
    ids = torch.cat([batch.ids, tokens.cpu()], 1)
    mask = torch.cat([batch.attention_mask, torch.ones_like(tokens.cpu())], 1)
    positions = torch.cat([batch.position_ids, batch.last_position + torch.arange(1, tokens.shape[1] + 1)], 1)
    device = model.get_output_embeddings().weight.device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device)).logits
    width = batch.ids.shape[1]
    return logits[:, width - 1:width - 1 + tokens.shape[1], LAYOUT.image_offset:LAYOUT.special_offset].float()


@torch.inference_mode()
def check_differences_are_near_ties(model) -> float:
    """Assert the teacher-forced properties above; return the free-running token agreement (fast vs reference)."""
    prefixes, u = _prefixes((3, 0, 7, 1, 2)), uniforms(list(range(5)), BF16_STEPS)
    args = dict(layout=LAYOUT, steps=BF16_STEPS, uniforms=u, unconditional=px.unconditional_prefix(LAYOUT))
    reference = sample_image_ids(model, prefixes, **args).cpu()
    fast = sample_image_ids_fast(model, prefixes, **args).cpu()
    batch = px.left_pad(prefixes, LAYOUT.pad_id)
    ref_logits = _reference_logits(model, batch, reference).cpu()
    fast_logits = teacher_forced_logits(model, batch, reference).cpu()
    scale = ref_logits.abs().max()
    torch.testing.assert_close(fast_logits, ref_logits, atol=0.05 * float(scale), rtol=0.0)
    for step in range(BF16_STEPS):
        p_ref, p_fast = filter_logits(ref_logits[:, step]), filter_logits(fast_logits[:, step])
        a, b = draw(p_ref, u[:, step]), draw(p_fast, u[:, step])
        cdf_ref, cdf_fast = torch.cumsum(p_ref, -1), torch.cumsum(p_fast, -1)
        slack = (cdf_ref - cdf_fast).abs().amax(-1) + 1e-6
        gap = (cdf_ref - u[:, step, None].float()).abs().amin(-1)
        assert bool(((a == b) | (gap <= slack)).all()), (
            f"step {step}: a draw differs away from a near-tie (gap {gap.tolist()}, slack {slack.tolist()})")
    return float((fast == reference).float().mean())


def test_bf16_on_cpu_differs_only_at_near_ties():
    model = _model().to(torch.bfloat16)
    agreement = check_differences_are_near_ties(model)
    print(f"bf16 CPU token agreement fast vs reference: {agreement:.3f}")


@pytest.mark.gpu
@cuda
def test_bf16_on_cuda_with_graphs_differs_only_at_near_ties():
    model = _model().to("cuda", torch.bfloat16)
    agreement = check_differences_are_near_ties(model)
    print(f"bf16 CUDA token agreement fast vs reference: {agreement:.3f}")


@pytest.mark.gpu
@cuda
@torch.inference_mode()
def test_cuda_graph_replay_gives_the_eager_static_tokens():
    """float32 on CUDA: the captured step and the eager static-cache step draw the same tokens (and match HF)."""
    model = _model().to("cuda")
    prefixes, u = _prefixes((3, 0, 7, 1)), uniforms(list(range(4)), BF16_STEPS)
    settings = Settings(cfg_scale=3.0, top_k=10, top_p=0.95)
    unconditional = px.unconditional_prefix(LAYOUT)
    graphed = FastSampler(model, LAYOUT, settings, graphs=True)
    eager = FastSampler(model, LAYOUT, settings, graphs=False)
    first = graphed(prefixes, steps=BF16_STEPS, uniforms=u, unconditional=unconditional)
    again = graphed(prefixes, steps=BF16_STEPS, uniforms=u, unconditional=unconditional)  # replays the kept graph
    plain = eager(prefixes, steps=BF16_STEPS, uniforms=u, unconditional=unconditional)
    reference = sample_image_ids(model, prefixes, layout=LAYOUT, steps=BF16_STEPS, uniforms=u, settings=settings,
                                 unconditional=unconditional)
    assert graphed.capture_seconds > 0 and isinstance(graphed._run.graph, torch.cuda.CUDAGraph)
    assert torch.equal(first, again) and torch.equal(first, plain)
    agreement = float((first == reference).float().mean())
    assert agreement > 0.9, f"fast vs reference float32 on CUDA: token agreement {agreement:.3f}"


def test_the_fixed_shape_step_and_a_failed_capture_fall_back_to_the_same_tokens(model, caplog, monkeypatch):
    """The step a graph captures (attention over the whole static cache, masked) gives the reference tokens; a
    capture that fails (here: no CUDA) logs a warning and the run finishes eagerly with the same tokens."""
    import logging

    from tokalign.generate.sample import fast_sampler

    settings = Settings(cfg_scale=2.0, top_p=0.9)
    prefixes, u = _prefixes((4, 1, 0)), uniforms([5, 6, 7], STEPS)
    unconditional = px.unconditional_prefix(LAYOUT)
    want = sample_image_ids(model, prefixes, layout=LAYOUT, steps=STEPS, uniforms=u, settings=settings,
                            unconditional=unconditional)
    with monkeypatch.context() as patch:  # every step at the captured (full-cache) shape
        patch.setattr(fast_sampler._Run, "decode",
                      lambda run, use_graph: [run.decode_step() for _ in range(1, run.steps)] and None)
        fixed = FastSampler(model, LAYOUT, settings)(prefixes, steps=STEPS, uniforms=u, unconditional=unconditional)
    assert torch.equal(fixed, want)
    sampler = FastSampler(model, LAYOUT, settings)
    sampler.graphs = True  # a CPU model: the capture cannot work
    with caplog.at_level(logging.WARNING):
        got = sampler(prefixes, steps=STEPS, uniforms=u, unconditional=unconditional)
    assert torch.equal(got, want) and sampler._run.graph is False
    assert any("capture of the decode step failed" in r.getMessage() for r in caplog.records)
