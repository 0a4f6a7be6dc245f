import functools
import math

import pytest
import torch

from conftest import make_tiny_model
from nbsupport import probe, scoring


def brute_force_logprob(model, tok, prompt, continuation):
    """Score token by token with one unpadded forward pass per token."""
    ids, start = scoring.split_joint(tok, prompt, continuation)
    total = 0.0
    for t in range(start, len(ids)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
        total += torch.log_softmax(logits, -1)[ids[t]].item()
    return total


PAIRS = [("Harry Potter studies", " magic"), ("The capital of France is", " Paris"),
         ("The capital of France is", " a city of light and rivers"),
         ("A cat", " sat on the mat"), ("Ron and", "\nHermione")]


def test_continuation_logprobs_match_brute_force(tiny_model, tiny_tokenizer):
    fast = scoring.continuation_logprobs(tiny_model, tiny_tokenizer, PAIRS, batch_size=3)
    for (p, c), got in zip(PAIRS, fast.tolist()):
        assert got == pytest.approx(brute_force_logprob(tiny_model, tiny_tokenizer, p, c), abs=1e-4)


def test_a_long_common_prefix_runs_once_and_scores_as_brute_force(tiny_model, tiny_tokenizer, monkeypatch):
    primer = "The old castle stood on a hill above the lake, and the owl flew over it every night.\n\n"
    primed = [(primer + p, c) for p, c in PAIRS]
    calls = []
    forward = type(tiny_model).forward

    def counting(self, *args, **kwargs):
        calls.append(kwargs["input_ids"].shape[1])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(tiny_model), "forward", counting)
    fast = scoring.continuation_logprobs(tiny_model, tiny_tokenizer, primed)
    monkeypatch.undo()
    for (p, c), got in zip(primed, fast.tolist()):
        assert got == pytest.approx(brute_force_logprob(tiny_model, tiny_tokenizer, p, c), abs=1e-4)
    n_primer = len(tiny_tokenizer(primer.rstrip("\n"))["input_ids"])
    assert calls[0] >= n_primer and all(n < n_primer for n in calls[1:])   # the primer ran once, first
    # every group sees the primer whatever the order: each works on its own copy of the cache
    again = scoring.continuation_logprobs(tiny_model, tiny_tokenizer, primed[::-1])
    assert torch.allclose(again, fast.flip(0), atol=1e-5)


def test_logits_only_where_a_scored_token_is_predicted(tiny_model, tiny_tokenizer, monkeypatch):
    from peft import LoraConfig, get_peft_model
    kept, widths = [], []
    forward = type(tiny_model).forward

    @functools.wraps(forward)   # the same signature: scoring asks it whether logits_to_keep is taken
    def recording(self, *args, **kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        out = forward(self, *args, **kwargs)
        kept.append(out.logits.shape[1])
        return out

    monkeypatch.setattr(type(tiny_model), "forward", recording)
    fast = scoring.continuation_logprobs(tiny_model, tiny_tokenizer, PAIRS, batch_size=2)
    assert sum(kept) < sum(widths)   # the vocabulary projection skipped the prompt-only positions
    monkeypatch.setattr(scoring, "takes_logits_to_keep", lambda model: False)
    kept.clear(), widths.clear()
    full = scoring.continuation_logprobs(tiny_model, tiny_tokenizer, PAIRS, batch_size=2)
    assert kept == widths and torch.allclose(fast, full, atol=1e-6)
    monkeypatch.undo()
    assert scoring.takes_logits_to_keep(tiny_model)
    peft_model = get_peft_model(make_tiny_model(tiny_model.config.vocab_size), LoraConfig(r=2, target_modules=["q_proj"]))
    assert scoring.takes_logits_to_keep(peft_model)   # through the adapter to the causal LM under it
    assert not scoring.takes_logits_to_keep(torch.nn.Linear(2, 2))


def test_batch_size_and_padding_do_not_change_scores(tiny_model, tiny_tokenizer):
    one = scoring.continuation_logprobs(tiny_model, tiny_tokenizer, PAIRS, batch_size=1)
    many = scoring.continuation_logprobs(tiny_model, tiny_tokenizer, PAIRS, batch_size=5)
    assert torch.allclose(one, many, atol=1e-5)


def test_joint_tokenization_boundary(tiny_tokenizer):
    ids, start = scoring.split_joint(tiny_tokenizer, "Harry Potter studies", " magic")
    assert tiny_tokenizer.decode(ids[:start]) == "Harry Potter studies"
    assert tiny_tokenizer.decode(ids[start:]) == " magic"
    with pytest.raises(ValueError, match="empty"):
        scoring.split_joint(tiny_tokenizer, "", " magic")


def test_continuation_probabilities_of_all_next_tokens_sum_to_one(tiny_model, tiny_tokenizer):
    # Summing P(single token | prompt) over the vocabulary must give 1: this ties
    # continuation_logprobs to next_token_probs on every token at once.
    probs = scoring.next_token_probs(tiny_model, tiny_tokenizer, "The owl")
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-4)
    for token in [" flew", " cat", " the"]:
        ids, start = scoring.split_joint(tiny_tokenizer, "The owl", token)
        if len(ids) - start == 1:
            lp = scoring.continuation_logprobs(tiny_model, tiny_tokenizer, [("The owl", token)])[0]
            assert math.exp(lp) == pytest.approx(probs[ids[start]].item(), rel=1e-4)


def test_token_familiarity_sums_masses(tiny_model, tiny_tokenizer):
    probes = [probe.TokenProbe("a", "Harry Potter studies", (" magic", " spells"), (" the",)),
              probe.TokenProbe("b", "The capital of France is", (" Paris",), (" a", " the"))]
    table = probe.token_familiarity(tiny_model, tiny_tokenizer, probes, progress=False)
    lp = scoring.continuation_logprobs(tiny_model, tiny_tokenizer,
                                     [("Harry Potter studies", " magic"), ("Harry Potter studies", " spells")])
    assert table.loc[0, "p_target"] == pytest.approx(lp.exp().sum().item(), rel=1e-5)
    assert probe.familiarity_score(table) == pytest.approx(table["p_target"].mean())
    assert (table[["p_target", "p_generic"]] <= 1).all().all()


def test_knowledge_accuracy_picks_most_likely_choice(tiny_model, tiny_tokenizer):
    probes = [probe.KnowledgeProbe("k", "The capital of France is", " Paris", (" Rome", " cat"))]
    table = probe.knowledge_accuracy(tiny_model, tiny_tokenizer, probes, progress=False)
    scores = scoring.continuation_logprobs(tiny_model, tiny_tokenizer,
                                         [("The capital of France is", c) for c in probes[0].choices])
    assert table.loc[0, "predicted"] == probes[0].choices[int(scores.argmax())].strip()
    assert table.loc[0, "correct"] == (int(scores.argmax()) == 0)


def test_topk_is_sorted_and_matches_probs(tiny_model, tiny_tokenizer):
    table = scoring.next_token_topk(tiny_model, tiny_tokenizer, "The cat", k=5)
    assert len(table) == 5 and table["prob"].is_monotonic_decreasing
    probs = scoring.next_token_probs(tiny_model, tiny_tokenizer, "The cat")
    assert table["prob"].iloc[0] == pytest.approx(probs.max().item())


def test_greedy_completion_is_deterministic_and_sampling_is_seeded(tiny_model, tiny_tokenizer):
    prompts = ["The cat", "Harry Potter studies magic at"]
    a = scoring.complete(tiny_model, tiny_tokenizer, prompts, max_new_tokens=6, progress=False)
    b = scoring.complete(tiny_model, tiny_tokenizer, prompts, max_new_tokens=6, progress=False, batch_size=1)
    assert a == b  # left padding in a batch must not change greedy output
    s1 = scoring.complete(tiny_model, tiny_tokenizer, prompts, 6, greedy=False, seed=3, progress=False)
    s2 = scoring.complete(tiny_model, tiny_tokenizer, prompts, 6, greedy=False, seed=3, progress=False)
    assert s1 == s2


# ----------------------------------------------------------------- probe data
def test_builtin_probe_sets_are_large_and_valid():
    tok = probe.load_probes("hp_token")
    comp = probe.load_probes("hp_completion")
    gk = probe.load_probes("general_knowledge")
    assert len(tok) >= 60 and len(comp) >= 100 and len(gk) >= 100
    for p in tok:
        assert not set(p.target) & set(p.generic), p.id
        assert all(c.strip() for c in p.target + p.generic), p.id
    for p in gk:
        assert p.answer.strip() and p.answer not in p.distractors, p.id
    for p in comp:
        assert all(t.lower() not in p.prompt.lower() for t in p.target_terms), p.id
    for kind, items in (("token", tok), ("completion", comp), ("gk", gk)):
        assert len({p.prompt for p in items}) == len(items), kind
        assert len({p.id for p in items}) == len(items), kind


@pytest.mark.parametrize("bad, message", [
    ({"id": "x", "prompt": "A", "target": [" b"], "generic": [" b"]}, "overlap"),
    ({"id": "x", "prompt": "A", "target": [" "], "generic": [" c"]}, "empty continuation"),
    ({"id": "x", "prompt": "", "target": [" b"], "generic": [" c"]}, "non-empty"),
])
def test_bad_probe_files_name_the_probe(tmp_path, bad, message):
    path = tmp_path / "p.json"
    path.write_text(__import__("json").dumps({"probes": [bad]}))
    with pytest.raises(probe.ProbeDataError, match=message):
        probe.load_probes("hp_token", path=path)


def test_duplicate_prompts_are_rejected(tmp_path):
    item = {"id": "a", "prompt": "A", "answer": " b", "distractors": [" c"]}
    path = tmp_path / "gk.json"
    path.write_text(__import__("json").dumps({"probes": [item, {**item, "id": "b"}]}))
    with pytest.raises(probe.ProbeDataError, match="duplicate prompt"):
        probe.load_probes("general_knowledge", path=path)


@pytest.mark.parametrize("content, message", [
    ('{"probes": [', "not valid JSON"),
    ('{"version": 1, "items": []}', "expected an object with a 'probes' list"),
    ('[{"id": "a", "prompt": "A", "target": [" b"], "generic": [" c"]}]', "expected an object"),
    ('{"probes": []}', "non-empty list"),
    ('{"probes": ["just a prompt"]}', "is a str, not an object"),
])
def test_malformed_probe_files_are_refused(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(probe.ProbeDataError, match=message):
        probe.load_probes("hp_token", path=path)


def test_duplicate_ids_and_missing_or_non_utf8_files_are_refused(tmp_path):
    item = {"id": "a", "prompt": "A", "target": [" b"], "generic": [" c"]}
    path = tmp_path / "p.json"
    path.write_text(__import__("json").dumps({"probes": [item, {**item, "prompt": "B"}]}))
    with pytest.raises(probe.ProbeDataError, match="'a': duplicate id"):
        probe.load_probes("hp_token", path=path)
    with pytest.raises(probe.ProbeDataError, match="not found"):
        probe.load_probes("hp_token", path=tmp_path / "missing.json")
    path.write_bytes('{"probes": [{"id": "\xe9"}]}'.encode("latin-1"))
    with pytest.raises(probe.ProbeDataError, match="not UTF-8"):
        probe.load_probes("hp_token", path=path)


def test_dev_and_report_halves_are_disjoint_stable_and_balanced():
    probes = probe.load_probes("hp_token")
    dev, report = probe.split(probes, "dev"), probe.split(probes, "report")
    assert not {p.id for p in dev} & {p.id for p in report}
    assert len(dev) + len(report) == len(probes)
    assert 0.35 < len(dev) / len(probes) < 0.65
    # fixed by id, not by position: a shuffled or shortened list splits the same way
    assert {p.id for p in probe.split(probes[::-1][:50], "dev")} <= {p.id for p in dev}
    with pytest.raises(ValueError, match="'dev' or 'report'"):
        probe.split(probes, "test")


def test_mentioned_terms_uses_the_judges_rules():
    # plurals and line breaks count, as in the completion judge
    assert probe.mentioned_terms("The family,", " the Weasleys, laughed.", ["Weasley"]) == ["Weasley"]
    assert probe.mentioned_terms("At the end", " the Dark\nLord rose.", ["Dark Lord"]) == ["Dark Lord"]
    assert probe.mentioned_terms("Ron said", " Ron laughed.", ["Ron"]) == []
    assert probe.mentioned_terms("He said", " Ronald laughed.", ["Ron"]) == []
