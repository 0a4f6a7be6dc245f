"""Inference-time WHP (nbsupport.generic_decoding) on tiny random models.

The reference everywhere is the formula recomputed from scratch: each prompt
unpadded, the whole prefix through B and through R at every step, no cache.
"""
from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_pair

from nbsupport import scoring
from nbsupport import generic_decoding as gd
from nbsupport import pair_views as pv

ALPHA = 5.0
PROMPTS = ["Harry Potter studies magic at a school", "The cat", "Ron and Hermione are"]


@pytest.fixture(scope="module", params=[True, False], ids=["shared", "separate"])
def pair(request, tiny_tokenizer):
    return make_tiny_pair(len(tiny_tokenizer), seed=0, shared=request.param)


@pytest.fixture(scope="module")
def shared_pair(tiny_tokenizer):
    return make_tiny_pair(len(tiny_tokenizer), seed=1, shared=True)


def left_padded(tok, prompts):
    side, tok.padding_side = tok.padding_side, "left"
    try:
        enc = tok(prompts, return_tensors="pt", padding=True)
    finally:
        tok.padding_side = side
    return enc["input_ids"], enc["attention_mask"]


@torch.no_grad()
def reference_views(pair, ids, mask, new_tokens):
    """(v_B, v_R), each [b, T, vocab]: every row unpadded, the whole prefix through B
    and through R at each step, no cache."""
    v_b, v_r = torch.empty(2, *new_tokens.shape, pair.model.config.vocab_size)
    for row in range(len(ids)):
        prompt = ids[row][mask[row].bool()]
        for t in range(new_tokens.shape[1]):
            prefix = torch.cat([prompt, new_tokens[row, :t]])[None]
            with pair.base() as B:
                v_b[row, t] = B(input_ids=prefix).logits[0, -1].float()
            v_r[row, t] = pair.model(input_ids=prefix).logits[0, -1].float()
    return v_b, v_r


def reference_logits(pair, ids, mask, new_tokens, alpha):
    """[b, T, vocab]: the formula v_B - alpha * ReLU(v_R - v_B) on the reference views."""
    v_b, v_r = reference_views(pair, ids, mask, new_tokens)
    return v_b - alpha * torch.relu(v_r - v_b)


class Recorder:
    """Counts the forwards of a Hugging Face model and the shape of their input_ids."""

    def __init__(self, model):
        self.shapes = []
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.shapes.append(tuple(kwargs["input_ids"].shape))

    def remove(self):
        self.handle.remove()


def hf_models(pair):
    """The plain transformers models under a pair (one when the weights are shared)."""
    if pair.shares_weights:
        return [pair.model.get_base_model()]
    return [pair.model, pair.separate_base]


# ----------------------------------------------------------------- the decoder
@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "sampled"])
def test_cached_logits_equal_no_cache_reference(pair, tiny_tokenizer, greedy):
    ids, mask = left_padded(tiny_tokenizer, PROMPTS)
    assert (mask == 0).any(), "the prompts must need left padding"
    out = gd.decode(pair, ids, mask, ALPHA, max_new_tokens=7, greedy=greedy, seed=3,
                    return_logits=True)
    assert out.new_tokens.shape == (3, 7) and out.logits.shape == (3, 7, len(tiny_tokenizer))
    assert torch.equal(out.sequences[:, :ids.shape[1]], ids)
    v_b, v_r = reference_views(pair, ids, mask, out.new_tokens)
    ref = v_b - ALPHA * torch.relu(v_r - v_b)
    torch.testing.assert_close(out.logits, ref, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ref, v_b, atol=1e-3), "the combination must move the logits away from B's"
    if greedy:
        assert torch.equal(out.new_tokens, ref.argmax(-1))


@pytest.mark.parametrize("n", [1, 4, 12])
def test_several_lengths_match_no_cache_decoding(pair, tiny_tokenizer, n):
    ids, mask = left_padded(tiny_tokenizer, PROMPTS)
    cached = gd.decode(pair, ids, mask, ALPHA, n, greedy=False, seed=5, return_logits=True)
    slow = gd.decode(pair, ids, mask, ALPHA, n, greedy=False, seed=5, return_logits=True,
                     use_cache=False, stack=False)
    assert cached.new_tokens.shape[1] == n
    assert torch.equal(cached.new_tokens, slow.new_tokens)
    torch.testing.assert_close(cached.logits, slow.logits, atol=1e-4, rtol=1e-4)


def tiny_gpt2_pair(vocab_size):
    """B and R as two random tiny GPT-2s. Llama's rotary positions only see distances,
    so a position-id bug under left padding cannot show there; GPT-2 learns absolute
    positions, so it does."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from nbsupport.pair import ModelPair

    cfg = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                     pad_token_id=0, eos_token_id=1, bos_token_id=1)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(GPT2LMHeadModel(cfg).eval())
    return ModelPair(models[1], base=models[0])


def test_left_padding_positions_with_absolute_position_model(tiny_tokenizer):
    gpt2 = tiny_gpt2_pair(len(tiny_tokenizer))
    ids, mask = left_padded(tiny_tokenizer, PROMPTS)
    out = gd.decode(gpt2, ids, mask, ALPHA, 5, greedy=False, seed=1, return_logits=True)
    ref = reference_logits(gpt2, ids, mask, out.new_tokens, ALPHA)
    torch.testing.assert_close(out.logits, ref, atol=1e-4, rtol=1e-4)


def test_cache_reads_only_the_new_token(pair, tiny_tokenizer):
    ids, mask = left_padded(tiny_tokenizer, PROMPTS)
    recorders = [Recorder(m) for m in hf_models(pair)]
    try:
        gd.decode(pair, ids, mask, ALPHA, max_new_tokens=4)
    finally:
        for r in recorders:
            r.remove()
    b, L = ids.shape
    if pair.shares_weights:   # one stacked forward per step: B rows then R rows
        assert recorders[0].shapes == [(2 * b, L)] + [(2 * b, 1)] * 3
    else:                      # two models, two forwards per step
        for r in recorders:
            assert r.shapes == [(b, L)] + [(b, 1)] * 3


def test_stacked_forward_equals_two_calls(shared_pair, tiny_tokenizer):
    ids, mask = left_padded(tiny_tokenizer, PROMPTS)
    pos = gd.positions(mask)
    assert pv.can_stack(shared_pair)
    with torch.no_grad(), pv.TwoViews(shared_pair, len(ids), cache=False, stack=True) as views:
        v_b1, v_r1 = views(ids, mask, pos)
    with torch.no_grad(), pv.TwoViews(shared_pair, len(ids), cache=False, stack=False) as views:
        v_b2, v_r2 = views(ids, mask, pos)
    with torch.no_grad():                    # the per-row hooks are gone: a plain call is R again
        plain = shared_pair.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    torch.testing.assert_close(plain[mask.bool()], v_r2[mask.bool()], atol=1e-5, rtol=1e-5)
    real = mask.bool()
    torch.testing.assert_close(v_b1[real], v_b2[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_r1[real], v_r2[real], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(v_b1[real], v_r1[real], atol=1e-3), "R must differ from B"


def test_stacked_decoding_equals_unstacked(shared_pair, tiny_tokenizer):
    ids, mask = left_padded(tiny_tokenizer, PROMPTS)
    one = gd.decode(shared_pair, ids, mask, ALPHA, 6, greedy=False, seed=2, return_logits=True, stack=True)
    two = gd.decode(shared_pair, ids, mask, ALPHA, 6, greedy=False, seed=2, return_logits=True, stack=False)
    assert torch.equal(one.new_tokens, two.new_tokens)
    torch.testing.assert_close(one.logits, two.logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("rows", ["slice", "peft"])
def test_stacked_rows_equal_two_calls(shared_pair, tiny_tokenizer, rows):
    """R's LoRA on the second half of the batch, by slicing or by PEFT's mixed batch."""
    ids, mask = left_padded(tiny_tokenizer, PROMPTS)
    pos, real = gd.positions(mask), mask.bool()
    with torch.no_grad(), pv.TwoViews(shared_pair, len(ids), cache=False, stack=True, rows=rows) as views:
        v_b1, v_r1 = views(ids, mask, pos)
    with torch.no_grad(), pv.TwoViews(shared_pair, len(ids), cache=False, stack=False) as views:
        v_b2, v_r2 = views(ids, mask, pos)
    torch.testing.assert_close(v_b1[real], v_b2[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_r1[real], v_r2[real], atol=1e-5, rtol=1e-5)
    layers = [m for m in shared_pair.model.modules() if hasattr(m, "lora_A")]
    assert layers and not any("forward" in vars(m) for m in layers), "the layers' own forward is back"


def test_slice_rows_fall_back_to_peft_when_not_plain_lora(shared_pair):
    assert pv.lora_rows(shared_pair.model, 3) is not None
    assert pv.lora_rows(shared_pair.model.get_base_model(), 3) is None      # not a PEFT model
    layer = next(m for m in shared_pair.model.modules() if hasattr(m, "lora_A"))
    adapter = shared_pair.model.active_adapters[0]
    layer.lora_variant[adapter] = object()                                  # e.g. DoRA
    try:
        assert pv.lora_rows(shared_pair.model, 3) is None
    finally:
        del layer.lora_variant[adapter]


def test_bad_rows_mode(shared_pair):
    with pytest.raises(ValueError, match="rows must be"):
        pv.TwoViews(shared_pair, 2, rows="gather")


def test_stacking_without_peft_private_hooks(shared_pair, tiny_tokenizer, monkeypatch):
    ids, mask = left_padded(tiny_tokenizer, PROMPTS)
    once = gd.decode(shared_pair, ids, mask, ALPHA, 4, return_logits=True)
    monkeypatch.setattr(pv.TwoViews, "peft_hooks", lambda self: None)   # adapter_names on every call
    per_call = gd.decode(shared_pair, ids, mask, ALPHA, 4, return_logits=True, rows="peft")
    assert torch.equal(once.new_tokens, per_call.new_tokens)
    torch.testing.assert_close(once.logits, per_call.logits)


def test_alpha_zero_is_b_greedy_generation(pair, tiny_tokenizer):
    ids, mask = left_padded(tiny_tokenizer, PROMPTS)
    with pair.base() as B:
        expected = B.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                              pad_token_id=0, eos_token_id=None)
    out = gd.decode(pair, ids, mask, alpha=0.0, max_new_tokens=8)
    assert torch.equal(out.sequences, expected)
    with pair.base() as B:
        texts = scoring.complete(B, tiny_tokenizer, PROMPTS, max_new_tokens=8, progress=False)
    assert gd.GenericModel(pair, 0.0).generate_text(tiny_tokenizer, PROMPTS, 8) == texts


def test_max_new_tokens_and_eos(pair, tiny_tokenizer):
    ids, mask = left_padded(tiny_tokenizer, PROMPTS)
    free = gd.decode(pair, ids, mask, ALPHA, 5)
    assert free.new_tokens.shape == (3, 5) and free.sequences.shape == (3, ids.shape[1] + 5)
    eos = int(free.new_tokens[0, 0])      # pretend row 0's first token is EOS
    out = gd.decode(pair, ids, mask, ALPHA, 5, eos_token_id=eos, pad_token_id=0)
    assert out.new_tokens[0, 0] == eos and (out.new_tokens[0, 1:] == 0).all()
    others = (free.new_tokens[1:] != eos).all(dim=1)
    assert torch.equal(out.new_tokens[1:][others], free.new_tokens[1:][others])


def test_stop_strings_cut_the_text(pair, tiny_tokenizer):
    model = gd.GenericModel(pair, ALPHA)
    kw = dict(max_new_tokens=12, greedy=False, temperature=1.0, top_p=1.0, seed=0)
    free = model.generate_text(tiny_tokenizer, PROMPTS[:1], **kw)[0]
    stop = free[len(free) // 2: len(free) // 2 + 2]
    assert len(stop) == 2
    cut = model.generate_text(tiny_tokenizer, PROMPTS[:1], stop_strings=[stop], **kw)[0]
    assert cut == free[:free.find(stop)]
    assert stop not in cut


def test_stop_string_stops_decoding_early(pair, tiny_tokenizer):
    from transformers.generation import StoppingCriteriaList, StopStringCriteria

    ids, mask = left_padded(tiny_tokenizer, PROMPTS[:1])
    free = gd.decode(pair, ids, mask, ALPHA, 12, greedy=False, seed=0)
    stop = tiny_tokenizer.decode(free.new_tokens[0, 3:5])
    criteria = StoppingCriteriaList([StopStringCriteria(tiny_tokenizer, [stop])])
    out = gd.decode(pair, ids, mask, ALPHA, 12, greedy=False, seed=0, stopping_criteria=criteria)
    assert out.new_tokens.shape[1] <= 5
    assert stop in tiny_tokenizer.decode(out.new_tokens[0])


def test_sampling_is_seeded(pair, tiny_tokenizer):
    model = gd.GenericModel(pair, ALPHA)
    run = lambda seed, **kw: model.generate_text(tiny_tokenizer, PROMPTS, 10, greedy=False, seed=seed, **kw)
    assert run(7) == run(7)
    assert run(7) != run(8)
    greedy = model.generate_text(tiny_tokenizer, PROMPTS, 10)
    assert run(7, top_p=1e-6) == greedy          # a nucleus of one token is greedy
    assert run(7, temperature=1e-4, top_p=1.0) == greedy


# ----------------------------------------------------------------- the scoring wrapper
def direct_generic(pair, ids, mask, alpha):
    with pair.base() as B:
        v_b = B(input_ids=ids, attention_mask=mask).logits.float()
    v_r = pair.model(input_ids=ids, attention_mask=mask).logits.float()
    return v_b - alpha * torch.relu(v_r - v_b)


@torch.no_grad()
def test_wrapper_logits_and_alpha_zero(pair, tiny_tokenizer):
    ids = torch.tensor([tiny_tokenizer("Harry Potter studies magic")["input_ids"]])
    mask = torch.ones_like(ids)
    model = gd.GenericModel(pair, ALPHA)
    torch.testing.assert_close(model(ids, mask).logits, direct_generic(pair, ids, mask, ALPHA),
                               atol=1e-5, rtol=1e-5)
    with pair.base() as B:
        assert torch.equal(gd.GenericModel(pair, 0.0)(ids, mask).logits, B(input_ids=ids).logits.float())
    assert next(model.parameters()) is next(pair.model.parameters())


def test_wrapper_with_continuation_logprobs(pair, tiny_tokenizer):
    pairs = [("Harry Potter studies", " magic at a school"), ("The cat sat", " on the mat")]
    got = scoring.continuation_logprobs(gd.GenericModel(pair, ALPHA), tiny_tokenizer, pairs)
    for i, (prompt, cont) in enumerate(pairs):
        ids, start = scoring.split_joint(tiny_tokenizer, prompt, cont)
        x = torch.tensor([ids])
        with torch.no_grad():
            logp = torch.log_softmax(direct_generic(pair, x, torch.ones_like(x), ALPHA)[0], -1)
        expected = sum(logp[t - 1, ids[t]] for t in range(start, len(ids)))
        assert math.isclose(got[i].item(), float(expected), rel_tol=1e-4, abs_tol=1e-4)
    # and the formula changes the score (R is not B)
    with pair.base() as B:
        assert not torch.allclose(got, scoring.continuation_logprobs(B, tiny_tokenizer, pairs), atol=1e-3)


def test_wrapper_with_perplexity_and_topk(pair, tiny_tokenizer):
    texts = ["The capital of France is Paris.", "A cat sat on the mat and the dog slept."]
    model = gd.GenericModel(pair, ALPHA)
    got = scoring.perplexity(model, tiny_tokenizer, texts, block_size=8, batch_size=2)
    nll, n = 0.0, 0
    for chunk in scoring.chunk_texts(tiny_tokenizer, texts, 8):
        x = torch.tensor([chunk])
        with torch.no_grad():
            logp = torch.log_softmax(direct_generic(pair, x, torch.ones_like(x), ALPHA)[0, :-1], -1)
        nll -= logp.gather(-1, x[0, 1:, None]).sum().item()
        n += len(chunk) - 1
    assert math.isclose(got, math.exp(nll / n), rel_tol=1e-4)
    table = scoring.next_token_topk(model, tiny_tokenizer, "Harry Potter studies", k=5)
    assert len(table) == 5 and table["prob"].is_monotonic_decreasing


@torch.no_grad()
def test_wrapper_continues_from_its_own_caches(pair, tiny_tokenizer):
    """A prefix with use_cache, then the rest from its PairCache (repeated for 2 rows):
    the same logits as the whole text at once."""
    ids = torch.tensor([tiny_tokenizer("Harry Potter studies magic at a school in the hills")["input_ids"]])
    model = gd.GenericModel(pair, ALPHA)
    whole = model(ids).logits
    first = model(ids[:, :5], use_cache=True)
    caches = first[gd._OUTPUT_CACHE]
    assert isinstance(caches, pv.PairCache) and caches.get_seq_length() == 5
    caches.batch_repeat_interleave(2)
    rest = model(ids[:, 5:].repeat(2, 1), **{scoring.cache_kwarg(model): caches}).logits
    torch.testing.assert_close(rest, whole[:, 5:].repeat(2, 1, 1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(first.logits, whole[:, :5], atol=1e-4, rtol=1e-4)
    assert getattr(model(ids), gd._OUTPUT_CACHE) is None        # no cache unless asked


def test_primed_scoring_runs_the_primer_once_and_scores_the_same(pair, tiny_tokenizer, monkeypatch):
    """continuation_logprobs on prompts that share a long start (a primer) reads the
    wrapper's caches; the scores equal those of whole rows without a cache."""
    primer = "The school of magic stands in the hills and the cat sat on the mat by the lake. "
    pairs = [(primer + "Harry Potter studies", " magic"), (primer + "The cat sat", " on the mat"),
             (primer + "Ron and Hermione are", " friends")]
    model = gd.GenericModel(pair, ALPHA)
    seen = []
    forward = gd.GenericModel.forward

    def counted(self, *args, **kwargs):
        seen.append((kwargs["input_ids"] if "input_ids" in kwargs else args[0]).shape)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(gd.GenericModel, "forward", counted)
    cached = scoring.continuation_logprobs(model, tiny_tokenizer, pairs)
    n_primer = len(tiny_tokenizer(primer)["input_ids"])
    assert seen[0][0] == 1 and seen[0][1] >= n_primer - 2          # the primer ran once, alone
    assert all(shape[1] < n_primer for shape in seen[1:])          # the rows never ran it again
    seen.clear()
    monkeypatch.setattr(model, "supports_prefix_cache", False, raising=False)
    whole = scoring.continuation_logprobs(model, tiny_tokenizer, pairs)
    assert all(shape[1] > n_primer for shape in seen)
    torch.testing.assert_close(cached, whole, atol=1e-4, rtol=1e-4)


def test_wrapper_cache_misuse_fails_clearly(shared_pair, tiny_tokenizer):
    ids = torch.tensor([tiny_tokenizer("Harry Potter studies magic")["input_ids"]])
    caches = gd.GenericModel(shared_pair, ALPHA)(ids, use_cache=True)[gd._OUTPUT_CACHE]
    with pytest.raises(ValueError, match="rows"):
        gd.GenericModel(shared_pair, ALPHA)(ids.repeat(3, 1), cache=caches)
    with pytest.raises(ValueError, match="another layout"):
        gd.GenericModel(shared_pair, 0.0)(ids, past_key_values=caches)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_left_padded_wrapper_with_position_ids(pair, tiny_tokenizer, kind):
    pair = pair if kind == "llama" else tiny_gpt2_pair(len(tiny_tokenizer))
    ids, mask = left_padded(tiny_tokenizer, PROMPTS)
    model = gd.GenericModel(pair, ALPHA)
    with torch.no_grad():
        logits = model(ids, mask, position_ids=gd.positions(mask)).logits
    row = 1                                   # "The cat": the most padded row
    alone = torch.tensor([tiny_tokenizer(PROMPTS[row])["input_ids"]])
    with torch.no_grad():
        expected = direct_generic(pair, alone, torch.ones_like(alone), ALPHA)[0]
    torch.testing.assert_close(logits[row][mask[row].bool()], expected, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------- bad inputs
def test_bad_inputs_fail_clearly(shared_pair, tiny_tokenizer):
    model = gd.GenericModel(shared_pair, ALPHA)
    tok = tiny_tokenizer
    with pytest.raises(ValueError, match="no prompts"):
        model.generate_text(tok, [], 5)
    with pytest.raises(ValueError, match="must not be empty"):
        model.generate_text(tok, ["The cat", ""], 5)
    with pytest.raises(ValueError, match="alpha"):
        gd.GenericModel(shared_pair, -1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate_text(tok, ["The cat"], 0)
    for top_p in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="top_p"):
            model.generate_text(tok, ["The cat"], 5, greedy=False, top_p=top_p)
    with pytest.raises(ValueError, match="temperature"):
        model.generate_text(tok, ["The cat"], 5, greedy=False, temperature=0.0)
    ids, mask = left_padded(tok, PROMPTS)
    with pytest.raises(ValueError, match="alpha"):
        gd.decode(shared_pair, ids, mask, alpha=-0.5)
    with pytest.raises(ValueError, match="LEFT-padded"):
        gd.decode(shared_pair, ids, mask.flip(1))
    empty_row = mask.clone()
    empty_row[1] = 0
    with pytest.raises(ValueError, match="prompt is empty"):
        gd.decode(shared_pair, ids, empty_row)
    with pytest.raises(ValueError, match="batch >= 1"):
        gd.decode(shared_pair, ids[:, :0], mask[:, :0])
    with pytest.raises(TypeError, match="labels"):
        model(ids, labels=ids)


def test_scorers_complete_with_a_generic_model(pair, tiny_tokenizer):
    """scoring.complete (hence evaluate.measure's completion judge) drives GenericModel.generate."""
    with pair.base() as B:
        plain = scoring.complete(B, tiny_tokenizer, PROMPTS, max_new_tokens=6, progress=False)
    assert scoring.complete(gd.GenericModel(pair, 0.0), tiny_tokenizer, PROMPTS, 6, progress=False) == plain
    whp = gd.GenericModel(pair, ALPHA)
    assert scoring.complete(whp, tiny_tokenizer, PROMPTS, 6, progress=False) == whp.generate_text(
        tiny_tokenizer, PROMPTS, 6)
    with pytest.raises(ValueError, match="top_k"):
        whp.generate(torch.ones(1, 2, dtype=torch.long), top_k=5)


def test_kl_of_a_generic_model_to_b(pair, tiny_tokenizer):
    texts = ["Harry Potter studies magic at a school in the hills.", "The cat sat on the mat."]
    assert scoring.kl_divergence(gd.GenericModel(pair, 0.0).against_base(), tiny_tokenizer, texts) == pytest.approx(0, abs=1e-6)
    kl = scoring.kl_divergence(gd.GenericModel(pair, ALPHA).against_base(), tiny_tokenizer, texts)
    assert kl > 1e-4
    with pair.base() as B:                     # B's side computed once, then the wrapper alone
        reference = scoring.BaseReference(B, tiny_tokenizer, texts)
    assert reference.kl(gd.GenericModel(pair, ALPHA)) == pytest.approx(kl, rel=1e-4)
    with pair.base() as B:                     # the base view is B exactly
        ids = tiny_tokenizer(texts[0], return_tensors="pt")["input_ids"]
        expected = B(input_ids=ids).logits
    torch.testing.assert_close(gd.BaseView(pair)(input_ids=ids).logits, expected)
