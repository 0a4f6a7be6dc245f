"""Label generation (docs/ALGORITHM.md section 4): the mapping rules on hand-built
examples, and the fast batched implementation against a slow, obviously-correct
reference on a tiny random model, label for label."""
import pytest
import torch

from conftest import make_tiny_pair
from nbsupport import corpus, generic_labels as labels, runs
from nbsupport.anchors.dictionary import AnchorDict, Entry, Translator
from nbsupport.pair import generic_logits

DICT = AnchorDict([Entry("Hogwarts", ["the big old school"]), Entry("Harry", ["Jon"]),
                   Entry("Ron", ["Maximilian"]), Entry("Quidditch", ["ball"])])


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def dec(tok, i):
    return tok.decode([i])


# ----------------------------------------------------------------- mapping rules by hand
def test_mapping_rules_when_anchor_and_translation_differ_in_length(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "The owl flew to Hogwarts at night and Ron sat."
    ids = ids_of(tok, text)
    a = labels.align_block(ids, tok, Translator(DICT), seed=0)
    assert a.translated_text == "The owl flew to the big old school at night and Maximilian sat."
    spans = labels._text_and_offsets(tok, ids)[1]
    t_off = tok(a.translated_text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for anchor in a.anchors:
        members = [p for p, s in enumerate(spans) if s[0] < anchor.end and s[1] > anchor.start]
        t_members = [j for j, s in enumerate(t_off) if s[0] < anchor.new_end and s[1] > anchor.new_start]
        assert len(members) != len(t_members) or anchor.key == "Ron"
        assert all(a.source[p] == -1 for p in members[:-1])        # inside: no label
        assert a.source[members[-1]] == t_members[-1]              # last -> last
    in_anchor = [any(s[0] < x.end and s[1] > x.start for x in a.anchors) for s in spans]
    mapped = 0
    for p in range(len(ids)):
        if in_anchor[p]:
            continue
        if a.source[p] >= 0:  # outside every anchor: the same text
            assert dec(tok, a.translated_ids[a.source[p]]) == dec(tok, ids[p])
            mapped += 1
        else:  # only a token whose neighbour is an anchor may lack a counterpart
            assert in_anchor[p - 1] or in_anchor[p + 1]
    assert mapped >= len(ids) - sum(in_anchor) - 2


@pytest.mark.parametrize("text", ["Hogwarts at night.", "The cat sat.\nHogwarts at night.",
                                  "The owl flew over Hogwarts at night."])
def test_variants_at_start_after_newline_and_after_space(tiny_tokenizer, text):
    tok = tiny_tokenizer
    ids = ids_of(tok, text)
    a = labels.align_block(ids, tok, Translator(DICT), seed=0)
    (anchor,) = a.anchors
    spans = labels._text_and_offsets(tok, ids)[1]
    members = [p for p, s in enumerate(spans) if s[0] < anchor.end and s[1] > anchor.start]
    last_t = a.translated_ids[a.source[members[-1]]]
    assert dec(tok, last_t).endswith("school")
    # the token after the anchor (" at") maps to the same text after the translation
    after = members[-1] + 1
    assert dec(tok, a.translated_ids[a.source[after]]) == dec(tok, ids[after]) == " at"


def test_repeated_anchor_is_masked_and_its_translation_forbidden(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "Harry saw the owl and then Harry saw the cat."
    ids = ids_of(tok, text)
    a = labels.align_block(ids, tok, Translator(DICT), seed=0)
    first, second = a.anchors
    assert first.first and not second.first
    spans = labels._text_and_offsets(tok, ids)[1]
    rep = [p for p, s in enumerate(spans) if s[0] < second.end and s[1] > second.start]
    assert all(a.source[p] == -1 for p in rep)
    assert a.source[rep[0] - 1] == -1                  # predicts the repeated anchor: no label
    assert a.source[rep[0] - 2] >= 0                   # ... but the one before it is trained
    start, forbidden = a.forbidden[0]
    first_members = [p for p, s in enumerate(spans) if s[0] < first.end and s[1] > first.start]
    assert start == first_members[-1]
    assert set(ids_of(tok, " Jon")) <= set(forbidden)


def test_forbidden_tokens_sit_at_the_mean_logit_from_their_position_on():
    torch.manual_seed(0)
    v_g, v_r = torch.randn(6, 20), torch.randn(6, 20)
    out = labels.combine(v_g, v_r, 2.0, [(3, [4, 7])])
    plain = generic_logits(v_g, v_r, 2.0)
    assert torch.equal(out[:3], plain[:3])
    assert torch.allclose(out[3:, 4], plain[3:].mean(-1)) and torch.allclose(out[3:, 7], plain[3:].mean(-1))
    others = [c for c in range(20) if c not in (4, 7)]
    assert torch.equal(out[3:, others], plain[3:, others])
    # rows given by their positions in the block: the rule follows positions, not row numbers
    rows = torch.tensor([1, 4, 5])
    sub = labels.combine(v_g[rows], v_r[rows], 2.0, [(3, [4, 7])], positions=rows)
    assert torch.equal(sub, out[rows])


# ----------------------------------------------------------------- slow reference
def overlapping(span, s, e):
    return span is not None and span[0] < e and span[1] > s


@torch.no_grad()
def reference_labels(pair, tok, ids, translator, alpha, seed):
    """Position by position, unbatched, every rule written out again."""
    text, spans = labels._text_and_offsets(tok, ids)
    tr = translator.translate(text, seed=seed)
    enc = tok(tr.text, add_special_tokens=False, return_offsets_mapping=True)
    t_ids, t_off = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
    L = len(ids)

    def members_of(a):
        return [q for q in range(L) if overlapping(spans[q], a.start, a.end)]

    def t_members_of(a):
        return [j for j in range(len(t_ids)) if overlapping(t_off[j], a.new_start, a.new_end)]

    src = [-1] * L
    for p in range(L):
        if spans[p] is None:
            continue
        hits = [a for a in tr.anchors if overlapping(spans[p], a.start, a.end)]
        if hits:
            a = hits[0]
            if a.first and p == members_of(a)[-1] and t_members_of(a):
                src[p] = t_members_of(a)[-1]
            continue
        delta = sum((a.new_end - a.new_start) - (a.end - a.start) for a in tr.anchors if a.end <= spans[p][0])
        for j in range(len(t_ids)):
            if t_off[j] == (spans[p][0] + delta, spans[p][1] + delta):
                src[p] = j
    for a in tr.anchors:
        m = members_of(a)
        if not a.first and m:
            for q in m + ([m[0] - 1] if m[0] > 0 else []):
                src[q] = -1
    v_r = pair.model(input_ids=torch.tensor([ids])).logits[0]
    with pair.base() as B:
        v_b = B(input_ids=torch.tensor([t_ids])).logits[0]
    out = [labels.IGNORE] * L
    for p in range(L - 1):
        if src[p] < 0:
            continue
        g, r = v_b[src[p]], v_r[p]
        v = g - alpha * torch.relu(r - g)
        mean = v.mean()
        for a in tr.anchors:
            m = members_of(a)
            if a.first and m and p >= m[-1]:
                for t in set(tok(" " + a.translation, add_special_tokens=False)["input_ids"]) | \
                        {t_ids[j] for j in t_members_of(a)}:
                    v[t] = mean
        out[p + 1] = int(v.argmax())
    return out


@pytest.fixture(scope="module")
def tiny_R(tiny_pair):
    return tiny_pair


TEXTS = ("Harry Potter studies magic at Hogwarts. Ron and Harry fly at night.\nHogwarts is far. "
         "The owl flew over the castle and Ron's cat slept. Quidditch at Hogwarts with Harry and Ron. ") * 3


def corpus_blocks(tok, size=32):
    return corpus.make_blocks(TEXTS, tok, size)


def same(a: labels.GenericLabels, b: labels.GenericLabels) -> bool:
    ta, tb = a.to_tensors(), b.to_tensors()
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_fast_labels_agree_with_the_reference_label_for_label(tmp_path, tiny_R, tiny_tokenizer):
    tok = tiny_tokenizer
    blocks = corpus_blocks(tok)
    run = runs.Run(tmp_path)
    alphas = [5.0, 2.5, 10.0, 0.0]
    labels.generate(tiny_R, tok, blocks, run, DICT, alphas, top_k=4, batch_size=3, shard_blocks=4,
                    seed=7, progress=False)
    got = labels.load(run)
    assert torch.equal(got.input_ids, blocks)
    translator = Translator(DICT)
    checked = 0
    for i in range(len(blocks)):
        for alpha in alphas:
            ref = reference_labels(tiny_R, tok, blocks[i].tolist(), translator, alpha, seed=7 + i)
            assert got.labels(alpha)[i].tolist() == ref, (i, alpha)
            checked += sum(r != labels.IGNORE for r in ref)
    assert checked > 100
    for alpha in alphas:  # the top soft target is the hard label, for every alpha
        trained = got.labels(alpha) != labels.IGNORE
        assert torch.equal(got.soft(alpha)[0][..., 0].long()[trained], got.labels(alpha)[trained])
    assert not torch.equal(got.soft(5)[1], got.soft(0)[1])


def test_several_alphas_in_one_pass_equal_separate_passes(tmp_path, tiny_R, tiny_tokenizer):
    blocks = corpus_blocks(tiny_tokenizer)[:4]
    together = runs.Run(tmp_path / "a")
    labels.generate(tiny_R, tiny_tokenizer, blocks, together, DICT, [5.0, 2.5], progress=False)
    alone = runs.Run(tmp_path / "b")
    labels.generate(tiny_R, tiny_tokenizer, blocks, alone, DICT, [2.5], progress=False)
    assert torch.equal(labels.load(together).labels(2.5), labels.load(alone).labels(2.5))


def test_deterministic_resumable_and_refuses_other_settings(tmp_path, tiny_R, tiny_tokenizer):
    blocks = corpus_blocks(tiny_tokenizer)
    run = runs.Run(tmp_path)
    kw = dict(alphas=[5.0], batch_size=2, shard_blocks=2, seed=1, progress=False)
    labels.generate(tiny_R, tiny_tokenizer, blocks, run, DICT, **kw)
    first = labels.load(run)
    shards = sorted((tmp_path / "labels").glob("shard-*.safetensors"))
    assert len(shards) == -(-len(blocks) // 2)
    shards[1].unlink()                      # as if interrupted before shard 1 was written
    labels.generate(tiny_R, tiny_tokenizer, blocks, run, DICT, **kw)
    again = labels.load(run)
    assert same(first, again)
    with pytest.raises(labels.LabelsError, match="other settings"):
        labels.generate(tiny_R, tiny_tokenizer, blocks, run, DICT, **{**kw, "alphas": [2.0]})


def test_ablations(tmp_path, tiny_R, tiny_tokenizer):
    tok = tiny_tokenizer
    blocks = corpus_blocks(tok)[:3]
    run = runs.Run(tmp_path)
    labels.generate(tiny_R, tok, blocks, run, None, [5.0], out="labels-reinforcement-only", progress=False)
    got = labels.load(run, "labels-reinforcement-only").labels(5)
    # no anchors: every position is trained and reads B and R on the same text
    v_r = tiny_R.model(input_ids=blocks).logits
    with tiny_R.base() as B:
        v_b = B(input_ids=blocks).logits
    expected = generic_logits(v_b, v_r, 5.0).argmax(-1)
    assert torch.equal(got[:, 1:], expected[:, :-1]) and (got[:, 0] == labels.IGNORE).all()
    labels.generate(tiny_R, tok, blocks, run, DICT, [0.0], out="labels-anchors-only", progress=False)
    anchors_only = labels.load(run, "labels-anchors-only").labels(0)
    assert (anchors_only == labels.IGNORE).sum() > (got == labels.IGNORE).sum()


def test_stats_and_replacements(tiny_tokenizer):
    ids = torch.tensor([[5, 6, 7, 8]])
    lab = torch.tensor([[labels.IGNORE, 6, 9, 9]])
    s = labels.label_stats(ids, lab)
    assert s["trained"] == 3 and s["differ"] == 2 and s["differ_fraction_of_trained"] == pytest.approx(2 / 3)
    table = labels.replacements(tiny_tokenizer, ids, lab)
    assert table["count"].sum() == 2


def test_anchor_token_ids_are_the_names_own_pieces(tiny_tokenizer):
    tok = tiny_tokenizer
    d = AnchorDict([Entry("Ron's", ["Tom's"]), Entry("Ministry of Magic", ["the Council"]),
                    Entry("Hogwarts", ["the school"])])
    ids = labels.anchor_token_ids(tok, d)
    pieces = {tok.decode([t]).strip() for t in ids}
    spelled = {tok.decode([t]).strip() for k in d.keys() for v in (" " + k, k)
               for t in tok(v, add_special_tokens=False)["input_ids"]}
    assert pieces and pieces <= spelled
    assert all(sum(c.isalpha() for c in p) >= 2 for p in pieces), pieces         # no "'", "s" or "."
    assert not pieces & {"of", "the", "'s"}
    # every letter-bearing piece that is not a function word is kept
    assert {p for p in spelled if sum(c.isalpha() for c in p) >= 2 and p.lower() not in labels.FUNCTION_WORDS} == pieces


def test_explain_block_matches_generated_labels(tmp_path, tiny_R, tiny_tokenizer):
    tok = tiny_tokenizer
    blocks = corpus_blocks(tok)[:1]
    run = runs.Run(tmp_path)
    labels.generate(tiny_R, tok, blocks, run, DICT, [5.0], seed=3, progress=False)
    table = labels.explain_block(tiny_R, tok, blocks[0].tolist(), Translator(DICT), 5.0, seed=3)
    stored = labels.load(run).labels(5)[0]
    for p, row in table.iterrows():
        assert row["trained"] == (stored[p + 1].item() != labels.IGNORE)
        if row["trained"]:
            assert row["label"] == tok.decode([stored[p + 1].item()])


def test_two_separate_models_give_the_labels_of_the_shared_weights(tmp_path, tiny_tokenizer):
    """A full-finetune R (two models) and a LoRA R (one model, adapter on/off) that
    compute the same functions must give the same labels."""
    tok = tiny_tokenizer
    blocks = corpus_blocks(tok)[:3]
    shared, separate = make_tiny_pair(len(tok), seed=5), make_tiny_pair(len(tok), seed=5, shared=False)
    for name, pair in (("shared", shared), ("separate", separate)):
        labels.generate(pair, tok, blocks, runs.Run(tmp_path / name), DICT, [5.0], progress=False)
    a, b = labels.load(runs.Run(tmp_path / "shared")), labels.load(runs.Run(tmp_path / "separate"))
    assert torch.equal(a.labels(5), b.labels(5))


@pytest.mark.parametrize("cut", [1, 2, 3, 5])
def test_character_offsets_of_a_block_cut_mid_word(tiny_tokenizer, cut):
    """Blocks are cut from one long token stream, so a block may start or end inside a
    word: tokens whose text does not tokenize back to themselves get no span (never
    trained); every other token's span is exactly its text in the decoded block."""
    tok = tiny_tokenizer
    ids = ids_of(tok, "Hogwarts and Quidditch and the mountains at night.")
    block = ids[cut:cut + 9]
    text, spans = labels._text_and_offsets(tok, block)
    assert text == tok.decode(block)
    assert len(spans) == len(block)
    assert sum(s is not None for s in spans) >= len(block) - 2   # at most the cut edges are lost
    for i, span in enumerate(spans):
        if span is not None:
            assert text[span[0]:span[1]] == tok.decode([block[i]])
    starts = [s[0] for s in spans if s is not None]
    assert starts == sorted(starts)


def test_sharded_across_processes_gives_the_same_labels_and_resumes_on_another_count(tmp_path, tiny_R, tiny_tokenizer):
    tok, blocks = tiny_tokenizer, corpus_blocks(tiny_tokenizer)
    kw = dict(alphas=[5.0, 0.0], top_k=3, batch_size=2, shard_blocks=2, seed=4, progress=False)
    one = runs.Run(tmp_path / "one")
    labels.generate(tiny_R, tok, blocks, one, DICT, **kw)
    # three "processes" (as torchrun would start them), each writing its own shards
    three = runs.Run(tmp_path / "three")
    for rank in range(3):
        labels.generate(tiny_R, tok, blocks, three, DICT, process_index=rank, num_processes=3, **kw)
    a, b = labels.load(one), labels.load(three)
    assert same(a, b)
    # interrupted on 2 processes (only rank 0 finished), completed on 1
    two = runs.Run(tmp_path / "two")
    labels.generate(tiny_R, tok, blocks, two, DICT, process_index=0, num_processes=2, **kw)
    with pytest.raises(labels.LabelsError, match="missing .* shards"):
        labels.load(two)
    labels.generate(tiny_R, tok, blocks, two, DICT, **kw)
    c = labels.load(two)
    assert same(a, c)
    with pytest.raises(ValueError, match="process_index"):
        labels.generate(tiny_R, tok, blocks, two, DICT, process_index=2, num_processes=2, **kw)


def test_generic_labels_by_alpha_round_trip_through_the_shard_keys():
    ids = torch.arange(6).reshape(2, 3)
    hard = {5.0: torch.ones(2, 3, dtype=torch.long), 2.5: torch.zeros(2, 3, dtype=torch.long)}
    soft_ids = {5.0: torch.ones(2, 3, 4, dtype=torch.int32)}
    soft_values = {5.0: torch.full((2, 3, 4), 0.5, dtype=torch.float16)}
    g = labels.GenericLabels(ids, hard, soft_ids, soft_values)
    back = labels.GenericLabels.from_tensors(g.to_tensors())
    assert same(g, back) and back.alphas == [2.5, 5.0]
    assert sorted(g.to_tensors()) == ["input_ids", "labels@2.5", "labels@5", "topk_ids@5", "topk_values@5"]
    with pytest.raises(KeyError, match="no labels for alpha=1; have 2.5, 5"):
        g.labels(1.0)
    with pytest.raises(ValueError, match="SOFT_TOP_K"):
        g.soft(2.5)
    assert g.digest(5.0) != g.digest(2.5) and g.digest(5.0) != g.digest(5.0, soft=True)
    joined = labels.GenericLabels.cat([g, back])
    assert joined.labels(5).shape == (4, 3) and joined.soft(5)[0].shape == (4, 3, 4)


def test_label_alphas_are_the_runs_half_twice_and_zero():
    assert labels.label_alphas(5.0) == [5.0, 2.5, 10.0, 0.0]
    assert labels.label_alphas(2.0) == [2.0, 1.0, 4.0, 0.0]


@pytest.mark.parametrize("change", ["dictionary", "reinforced", "blocks"])
def test_labels_made_from_another_input_are_made_again(tmp_path, tiny_R, tiny_tokenizer, change, capsys):
    """After notebook 02 or 03 is rerun (another R, another dictionary, other blocks),
    the labels folder is stale: it is replaced, not loaded as if current."""
    tok, blocks = tiny_tokenizer, corpus_blocks(tiny_tokenizer)[:4]
    run = runs.Run(tmp_path)
    kw = dict(alphas=[5.0], shard_blocks=2, seed=1, progress=False)
    labels.generate(tiny_R, tok, blocks, run, DICT, reinforced="r1", **kw)
    old = labels.load(run)
    other_dict = AnchorDict([Entry("Harry", ["Bert"]), Entry("Ron", ["Carl"])])
    args = {"dictionary": (blocks, other_dict, "r1"), "reinforced": (blocks, DICT, "r2"),
            "blocks": (blocks.flip(0), DICT, "r1")}[change]
    labels.generate(tiny_R, tok, args[0], run, args[1], reinforced=args[2], **kw)
    out = capsys.readouterr().out
    key = {"dictionary": "dictionary", "reinforced": "reinforced", "blocks": "blocks_sha256"}[change]
    assert f"made from another {key}" in out
    fresh = runs.Run(tmp_path / "fresh")
    labels.generate(tiny_R, tok, args[0], fresh, args[1], reinforced=args[2], **kw)
    assert same(labels.load(run), labels.load(fresh))
    if change != "reinforced":   # the same model under another identity gives the same labels: only the record says
        assert not same(labels.load(run), old)
    assert run.read_json("labels/meta.json")["reinforced"] == args[2]


def test_run_stage_makes_the_four_alphas_and_the_ablation(tmp_path, tiny_R, tiny_tokenizer):
    from nbsupport import config

    blocks = corpus_blocks(tiny_tokenizer)[:2]
    run = runs.Run(tmp_path)
    run.path("reinforce/adapter").mkdir(parents=True)
    run.path("reinforce/adapter/adapter_model.safetensors").write_bytes(b"R")
    cfg = config.resolve("smoke", alpha=4.0, soft_top_k=2, label_batch_size=2)
    got = labels.run_stage(run, cfg, tiny_R, tiny_tokenizer, DICT, blocks, progress=False)
    assert got.alphas == [0.0, 2.0, 4.0, 8.0] and got.soft(4.0)[0].shape[-1] == 2
    only_r = labels.load(run, labels.ABLATION_OUT)
    assert only_r.alphas == [4.0]
    meta = run.read_json("labels/meta.json")
    assert meta["reinforced"] == run.read_json(f"{labels.ABLATION_OUT}/meta.json")["reinforced"]
    run.path("reinforce/adapter/adapter_model.safetensors").write_bytes(b"R2")   # notebook 02 trained R again
    labels.run_stage(run, cfg, tiny_R, tiny_tokenizer, DICT, blocks, progress=False)
    assert run.read_json("labels/meta.json")["reinforced"] != meta["reinforced"]


def test_the_labels_of_the_first_blocks():
    hard = {5.0: torch.arange(12).view(3, 4), 0.0: -torch.arange(12).view(3, 4)}
    ids = {a: torch.zeros(3, 4, 2, dtype=torch.int32) for a in hard}
    vals = {a: torch.ones(3, 4, 2, dtype=torch.float16) for a in hard}
    data = labels.GenericLabels(torch.arange(12).view(3, 4) + 100, hard, ids, vals)
    two = data.first(2)
    assert torch.equal(two.input_ids, data.input_ids[:2]) and two.alphas == data.alphas
    assert torch.equal(two.labels(0.0), hard[0.0][:2]) and two.soft(5.0)[0].shape == (2, 4, 2)
    with pytest.raises(ValueError, match="between 1 and 3"):
        data.first(4)
