"""Perplexity and KL (nbsupport.scoring) against brute force, the offline judge
(nbsupport.evaluate, on the one term matcher) on hand-written cases, the LLM judge
against a fake loopback server, and the paired general-knowledge reading."""
from __future__ import annotations

import copy
import dataclasses
import json
import math

import pandas as pd
import pytest
import torch

import nbsupport
from conftest import make_tiny_model
from fake_llm import answer
from nbsupport import corpus, evaluate, measure_memo, probe, scoring
from nbsupport.llm_client import LLMError
from nbsupport.pair import ModelPair

TEXTS = [
    "Harry Potter studies magic at a school in the mountains. The owl flew over the castle.",
    "The capital of France is Paris. The capital of Italy is Rome. A cat sat on the mat.",
    "Ron and Hermione are friends.",
    "The dog slept by the fire.\nNew lines matter too. " * 3,
]


# ----------------------------------------------------------------- brute force
def _brute_chunks(tok, texts, block_size):
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        for lo in range(0, len(ids), block_size):
            if len(ids[lo:lo + block_size]) >= 2:
                yield torch.tensor([ids[lo:lo + block_size]])


def _brute_logp(model, chunk):
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=chunk).logits[0, :-1].double(), -1)


def brute_perplexity(model, tok, texts, block_size):
    nll, count = 0.0, 0
    for chunk in _brute_chunks(tok, texts, block_size):
        logp = _brute_logp(model, chunk)
        nll -= logp[torch.arange(len(logp)), chunk[0, 1:]].sum().item()
        count += len(logp)
    return math.exp(nll / count)


def brute_kl(model, base, tok, texts, block_size):
    total, count = 0.0, 0
    for chunk in _brute_chunks(tok, texts, block_size):
        logp_m, logp_b = _brute_logp(model, chunk), _brute_logp(base, chunk)
        total += (logp_b.exp() * (logp_b - logp_m)).sum().item()
        count += len(logp_m)
    return total / count


def _block_size_with_a_one_token_tail(tok, texts):
    """A block size that leaves some text a 1-token last chunk (which must be dropped)."""
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return next(b for b in range(8, 64) if any(n > b and n % b == 1 for n in lengths))


# ----------------------------------------------------------------- perplexity
def test_perplexity_matches_brute_force_for_any_batch_size(tiny_model, tiny_tokenizer):
    block = _block_size_with_a_one_token_tail(tiny_tokenizer, TEXTS)
    expected = brute_perplexity(tiny_model, tiny_tokenizer, TEXTS, block)
    for batch_size in (1, 3, 16):
        got = scoring.perplexity(tiny_model, tiny_tokenizer, TEXTS, block_size=block,
                                  batch_size=batch_size)
        assert got == pytest.approx(expected, rel=1e-5)
    # a random model is near-uniform over the vocabulary, not near 1
    assert 0.3 * len(tiny_tokenizer) < expected < 3 * len(tiny_tokenizer)


def test_block_size_changes_the_chunks(tiny_model, tiny_tokenizer):
    short = scoring.perplexity(tiny_model, tiny_tokenizer, TEXTS, block_size=6)
    assert short == pytest.approx(brute_perplexity(tiny_model, tiny_tokenizer, TEXTS, 6), rel=1e-5)
    assert short != pytest.approx(scoring.perplexity(tiny_model, tiny_tokenizer, TEXTS), rel=1e-6)


def test_short_texts_are_skipped_and_empty_input_raises(tiny_model, tiny_tokenizer):
    one_token = "a"
    assert len(tiny_tokenizer(one_token, add_special_tokens=False)["input_ids"]) == 1
    alone = scoring.perplexity(tiny_model, tiny_tokenizer, TEXTS[:2])
    with_short = scoring.perplexity(tiny_model, tiny_tokenizer, [one_token, *TEXTS[:2], ""])
    assert with_short == pytest.approx(alone, rel=1e-6)
    for texts in ([], [""], [one_token]):
        with pytest.raises(ValueError, match="nothing to predict"):
            scoring.perplexity(tiny_model, tiny_tokenizer, texts)
    with pytest.raises(ValueError, match="block_size"):
        scoring.perplexity(tiny_model, tiny_tokenizer, TEXTS, block_size=1)


# ----------------------------------------------------------------- KL to the baseline
def test_kl_is_zero_against_itself_and_matches_brute_force(tiny_model, tiny_tokenizer):
    assert abs(scoring.kl_divergence(ModelPair(tiny_model, base=tiny_model), tiny_tokenizer, TEXTS)) < 1e-6
    other = make_tiny_model(len(tiny_tokenizer), seed=1)
    expected = brute_kl(other, tiny_model, tiny_tokenizer, TEXTS, 16)
    got = scoring.kl_divergence(ModelPair(other, base=tiny_model), tiny_tokenizer, TEXTS, block_size=16,
                                batch_size=3)
    assert expected > 1e-4
    assert got == pytest.approx(expected, rel=1e-4)
    # KL is not symmetric: the direction (baseline first) matters
    reverse = brute_kl(tiny_model, other, tiny_tokenizer, TEXTS, 16)
    assert got != pytest.approx(reverse, rel=1e-3)


def test_a_base_reference_gives_the_pair_kl_for_every_model(tiny_model, tiny_tokenizer):
    reference = scoring.BaseReference(tiny_model, tiny_tokenizer, TEXTS, block_size=16, batch_size=3)
    assert abs(reference.kl(tiny_model)) < 1e-6
    for seed in (1, 2):
        other = make_tiny_model(len(tiny_tokenizer), seed=seed)
        expected = brute_kl(other, tiny_model, tiny_tokenizer, TEXTS, 16)
        assert expected > 1e-4 and reference.kl(other) == pytest.approx(expected, rel=1e-4)
    numbers, _ = evaluate.measure(other, tiny_tokenizer, [], kl_reference=reference)
    assert numbers["kl_to_baseline"] == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="not both"):
        evaluate.measure(other, tiny_tokenizer, [], kl_reference=reference, kl_pair=ModelPair(other, base=tiny_model))
    with pytest.raises(ValueError, match="at least one text"):
        scoring.BaseReference(tiny_model, tiny_tokenizer, [])


def test_the_kl_passes_also_give_the_perplexity_of_the_reference_texts(tiny_model, tiny_tokenizer):
    other = make_tiny_model(len(tiny_tokenizer), seed=1)
    rows = []
    hook = other.register_forward_hook(lambda module, args, kwargs, out: rows.append(len(kwargs["input_ids"])),
                                       with_kwargs=True)
    try:
        reference = scoring.BaseReference(tiny_model, tiny_tokenizer, TEXTS[:2])   # measure's chunking (256)
        kl, nll, n = reference.kl_and_nll(other)
        assert (nll, n) == pytest.approx(scoring.nll_sum(other, tiny_tokenizer, TEXTS[:2]), rel=1e-6)
        assert kl == pytest.approx(reference.kl(other), rel=1e-9)
        parts = [scoring.nll_sum(other, tiny_tokenizer, [t]) for t in TEXTS[:2]]   # sums over texts add up
        assert nll == pytest.approx(sum(p[0] for p in parts), rel=1e-6) and n == sum(p[1] for p in parts)
        # every reference text is read, not scored again (a text given twice counts twice)
        for texts, scored in ((TEXTS, 2), (TEXTS[1:], 2), (TEXTS + TEXTS[:1], 2), (TEXTS + TEXTS[2:3], 2), (TEXTS[:2], 0)):
            expected = scoring.perplexity(other, tiny_tokenizer, texts)
            rows.clear()
            numbers, _ = evaluate.measure(other, tiny_tokenizer, [], eval_texts=texts, kl_reference=reference)
            assert numbers["perplexity"] == pytest.approx(expected, rel=1e-6)
            assert numbers["kl_to_baseline"] == pytest.approx(kl, rel=1e-9)
            # one pass over the 2 reference texts, then only what they did not cover (every text is one chunk)
            assert sum(rows) == 2 + scored, texts
        coarse = scoring.BaseReference(tiny_model, tiny_tokenizer, TEXTS[:1], block_size=16)   # other chunks
        expected = scoring.perplexity(other, tiny_tokenizer, TEXTS)
        rows.clear()
        numbers, _ = evaluate.measure(other, tiny_tokenizer, [], eval_texts=TEXTS, kl_reference=coarse)
        assert numbers["perplexity"] == pytest.approx(expected, rel=1e-6)
        assert sum(rows) == len(coarse.chunks) + len(TEXTS)
    finally:
        hook.remove()


def test_kl_with_a_lora_adapter_uses_the_adapter_off_as_baseline(tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    fresh = make_tiny_model(len(tiny_tokenizer), seed=2)
    original = copy.deepcopy(fresh)
    model = get_peft_model(fresh, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                             init_lora_weights=False, lora_dropout=0.5))
    model.train()  # dropout on: the functions must evaluate without it
    ppl_before = scoring.perplexity(model, tiny_tokenizer, TEXTS)
    with_adapter_off = scoring.kl_divergence(ModelPair(model), tiny_tokenizer, TEXTS)
    with_copy = scoring.kl_divergence(ModelPair(model, base=original), tiny_tokenizer, TEXTS)
    assert with_adapter_off > 1e-4
    assert with_adapter_off == pytest.approx(with_copy, rel=1e-4)
    # the adapter is back on afterwards, and the model is still in training mode
    assert model.training
    assert scoring.perplexity(model, tiny_tokenizer, TEXTS) == pytest.approx(ppl_before, rel=1e-6)
    ppl_original = scoring.perplexity(original, tiny_tokenizer, TEXTS)
    assert ppl_before != pytest.approx(ppl_original, rel=1e-4)


def test_a_pair_without_adapter_or_base_is_refused(tiny_model):
    with pytest.raises(ValueError, match="base="):
        ModelPair(tiny_model)


# ----------------------------------------------------------------- evaluation texts
def test_load_generic_texts_reads_md_files_in_order(tmp_path, monkeypatch):
    folder = tmp_path / "eval" / "generic"
    folder.mkdir(parents=True)
    (folder / "b.md").write_text("Second text.", "utf-8")
    (folder / "a.md").write_text("First text.", "utf-8")
    (folder / "notes.txt").write_text("not a text", "utf-8")
    (folder / "empty.md").write_text("  \n", "utf-8")
    monkeypatch.setattr(nbsupport, "DATA_DIR", tmp_path)
    assert corpus.load_eval_texts() == ["First text.", "Second text."]
    with pytest.raises(FileNotFoundError):
        corpus.load_eval_texts("nearby")
    with pytest.raises(ValueError, match="generic, nearby, independent"):
        corpus.load_eval_texts("hp")


def test_retain_and_evaluation_text_are_disjoint():
    retain, held_out = corpus.retain_texts(), corpus.heldout_texts()
    assert retain and held_out
    assert not set(retain) & set(held_out)

    def paragraphs(texts):
        return {p.strip() for t in texts for p in t.split("\n\n") if len(p.strip()) > 40}

    def shingles(texts, n=8):
        words = [w for t in texts for w in t.lower().split()]
        return {tuple(words[i:i + n]) for i in range(len(words) - n)}

    # no paragraph, and no run of 8 words, of the held-out text is trained on
    assert not paragraphs(retain) & paragraphs(held_out)
    assert len(shingles(retain) & shingles(held_out)) == 0
    # the held-out pool is large enough to measure a 3% perplexity change
    assert sum(len(t.split()) for t in held_out) >= 15000


def test_a_light_held_out_measure_mixes_kinds_of_writing():
    five = corpus.heldout_texts(limit=5)
    titles = [t.splitlines()[0] for t in five]
    assert len(set(titles)) == 5 and five[0] == corpus.heldout_texts()[0]
    assert five[1] == corpus.heldout_texts()[5]   # the second comes from the next kind


@pytest.mark.parametrize("kind", corpus.TEXT_KINDS)
def test_shipped_texts_load(kind):
    if not any((nbsupport.DATA_DIR / "eval" / kind).glob("*.md")):
        pytest.skip(f"no {kind} evaluation texts are shipped yet")
    texts = corpus.load_eval_texts(kind)
    assert texts and all(t.strip() for t in texts)


# ----------------------------------------------------------------- the offline judge
UNIQUE = ["Harry Potter", "Harry", "Ron", "Hermione", "Hogwarts", "Great Hall", "Weasley",
          "Expelliarmus"]

JUDGE_CASES = [
    # (prompt, completion, score, terms the completion adds)
    ("Harry walked into the", " Great Hall with Hermione.", 3, ["Hermione", "Great Hall"]),
    ("He borrowed", " Ron's old jumper.", 3, ["Ron"]),                     # possessive
    ("She met", " HERMIONE at the station.", 3, ["Hermione"]),            # case
    ("The family next door,", " the Weasleys, had red hair.", 3, ["Weasley"]),  # plural
    ("He shouted", " expelliarmus! and the wand flew away.", 3, ["Expelliarmus"]),
    ("The blacksmith worked the", " iron all day long.", 0, []),         # not "Ron"
    ("His name was", " Ronald Smith, a baker.", 0, []),                    # not "Ron"
    ("The weather today is", " sunny and warm.", 0, []),
    ("It", " scares me at night.", 0, []),                               # not "scar"
    ("The old man raised his", " wand and cast a spell.", 2, []),
    ("At the end of the story the", " Dark\nLord returned.", 2, []),      # multi-word, newline
    ("In the forest", " three witches laughed.", 2, []),                  # theme plural
    ("Ron looked at", " Ron's broomstick.", 2, []),                       # Ron given, theme new
    ("Harry Potter sat down. Then", " Harry Potter smiled.", 1, []),      # given by the prompt
    ("HOGWARTS is", " Hogwarts is a big place.", 1, []),                  # given, other case
    ("The wizard said", " that the wizard was tired.", 1, []),            # theme given
]


@pytest.mark.parametrize("prompt, completion, score, terms", JUDGE_CASES)
def test_judge_offline(prompt, completion, score, terms):
    assert evaluate.judge_offline(prompt, completion, UNIQUE) == score
    assert evaluate.judge_terms(prompt, completion, UNIQUE) == terms


def test_judge_cases_cover_every_score():
    assert {case[2] for case in JUDGE_CASES} == {0, 1, 2, 3}


def test_theme_terms_can_be_replaced():
    assert evaluate.judge_offline("A", " dragon!", []) == 2
    assert evaluate.judge_offline("A", " dragon!", [], theme_terms=["unicorn"]) == 0
    assert evaluate.judge_offline("A", " unicorn!", [], theme_terms=("unicorn",)) == 2


# ----------------------------------------------------------------- familiarity
def test_completion_familiarity():
    assert evaluate.completion_familiarity([3, 3, 0, 0]) == pytest.approx(0.5)
    assert evaluate.completion_familiarity([0, 0]) == 0.0
    assert evaluate.completion_familiarity((3,)) == 1.0
    assert evaluate.completion_familiarity([1, 2, 0]) == pytest.approx(1 / 3)
    for bad in ([], [4], [-1], [0, 2.5]):
        with pytest.raises(ValueError):
            evaluate.completion_familiarity(bad)


def test_judge_table_offline():
    prompts, completions = zip(*[(p, c) for p, c, *_ in JUDGE_CASES[:3]])
    # the terms may come as a one-shot iterator
    table = evaluate.judge_table(prompts, completions, iter(UNIQUE))
    assert list(table.columns) == ["prompt", "completion", "score", "terms", "judge"]
    assert table["score"].tolist() == [3, 3, 3]
    assert table["terms"].tolist() == ["Hermione, Great Hall", "Ron", "Hermione"]
    assert set(table["judge"]) == {"offline"}
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        evaluate.judge_table(["a", "b"], ["c"], UNIQUE)


# ----------------------------------------------------------------- the LLM judge
HERMIONE = '{"score": 3, "reason": "names Hermione"}'


def test_judge_llm(server):
    server.script((200, answer(HERMIONE)))
    result = evaluate.judge_llm(server.client(max_retries=0), "Harry's best friend is", " Hermione Granger.")
    assert result == {"score": 3, "reason": "names Hermione"}
    request = server.requests[0]["json"]
    assert request["response_format"]["json_schema"]["schema"] == evaluate.JUDGE_SCHEMA
    system, user = request["messages"]
    assert system["role"] == "system" and "3 =" in system["content"] and "0 =" in system["content"]
    assert "Harry's best friend is" in user["content"] and "Hermione Granger." in user["content"]


def test_judge_table_with_llm(server):
    server.script((200, answer(HERMIONE)), (200, answer(HERMIONE)))
    table = evaluate.judge_table(["The weather is", "She met"], [" sunny.", " Hermione."], UNIQUE,
                                 client=server.client(max_retries=0))
    assert table["score"].tolist() == [3, 3]  # the LLM's scores, not the offline 0 and 3
    assert table["terms"].tolist() == ["", "Hermione"]
    assert set(table["judge"]) == {"llm"}
    assert len(server.requests) == 2


def test_judge_llm_rejects_an_out_of_range_score(server):
    server.script((200, answer('{"score": 5, "reason": "very Harry Potter"}')))
    with pytest.raises(LLMError, match="schema"):
        evaluate.judge_llm(server.client(max_retries=0), "Once upon a time", " a wizard.")


def test_judge_llm_checks_clients_that_do_not_validate():
    class Lenient:
        def chat_json(self, messages, schema):
            return {"score": 7, "reason": "?"}

    with pytest.raises(ValueError, match="invalid score"):
        evaluate.judge_llm(Lenient(), "a", "b")


def test_measure_and_report(tmp_path, tiny_model, tiny_tokenizer):
    import subprocess
    import sys

    import pandas as pd

    from nbsupport import probe, runs
    token = [probe.TokenProbe("a", "Harry Potter studies", (" magic",), (" the",))]
    gk = [probe.KnowledgeProbe("k", "The capital of France is", " Paris", (" Rome",))]
    numbers, tables = evaluate.measure(tiny_model, tiny_tokenizer, token, gk, eval_texts=["The cat sat on the mat."],
                                       kl_pair=ModelPair(tiny_model, base=tiny_model))
    half = "dev" if probe.split(token, "dev") else "report"
    assert set(numbers) == {"token_familiarity", "generic_mass", "knowledge_accuracy", "perplexity", "kl_to_baseline",
                            f"token_familiarity_{half}"}
    assert numbers[f"token_familiarity_{half}"] == numbers["token_familiarity"]   # one probe, in one half
    assert numbers["kl_to_baseline"] == pytest.approx(0.0, abs=1e-6)
    rel = evaluate.relative_to(numbers, {**numbers, "token_familiarity": numbers["token_familiarity"] / 10})
    assert rel["familiarity_drop"] == pytest.approx(90.0) and rel["perplexity_rise"] == 0.0
    run = runs.Run(tmp_path)
    run.write_table("evaluate/results.csv", pd.DataFrame([{"model": "baseline", **numbers},
                                                          {"model": "paper", **numbers, **rel}]))
    from nbsupport import report
    text = report.results_markdown(run)
    assert text.splitlines()[0].startswith("| model | target prob.") and "| paper |" in text
    proc = subprocess.run([sys.executable, "-m", "nbsupport", "report", "--run-dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == text
    missing = subprocess.run([sys.executable, "-m", "nbsupport", "report", "--run-dir", str(tmp_path / "x")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "06_evaluation.ipynb" in missing.stderr


def test_judge_table_takes_each_prompts_own_terms():
    table = evaluate.judge_table(["She met", "He met"], [" Hermione.", " Hermione."], [["Hermione"], ["Ron"]])
    assert table["score"].tolist() == [3, 0]
    with pytest.raises(ValueError, match="2 prompts but 1 lists"):
        evaluate.judge_table(["a", "b"], ["c", "d"], [["x"]])


def test_knowledge_flips_counts_each_way_and_tests_them():
    import pandas as pd

    before = pd.DataFrame({"id": list("abcdefghij"), "correct": [True] * 8 + [False] * 2})
    after = before.assign(correct=[False] * 6 + [True] * 2 + [True, False])
    flips = evaluate.knowledge_flips(before, after)
    assert (flips["lost"], flips["gained"], flips["questions"]) == (6, 1, 10)
    # exact two-sided McNemar: 2 * P(X <= 1), X ~ Binomial(7, 1/2) = 2 * 8/128
    assert flips["p_value"] == pytest.approx(0.125)
    assert evaluate.knowledge_flips(before, before)["p_value"] == 1.0
    with pytest.raises(ValueError, match="same questions"):
        evaluate.knowledge_flips(before, after.iloc[:5])


# ----------------------------------------------------------------- where the rest sits
def _token_table(rows):
    return pd.DataFrame([{"id": f"t{i}", "category": "c", "prompt": p, "target": t, "p_target": v, "p_generic": 0.0}
                         for i, (p, t, v) in enumerate(rows)])


def test_residual_table_says_where_what_is_left_sits_and_if_the_text_said_it():
    text = "Her house colours were scarlet and gold. The castle's cloak room. Dumbledore smiled."
    before = _token_table([("The headmaster is Albus", "Dumbledore", 0.4), ("colours are scarlet and", "gold", 0.2),
                           ("He Who Must Not Be", "Named", 0.6), ("A probe nobody knew", "Zzz/Yyy", 0.0)])
    after = before.assign(p_target=[0.01, 0.19, 0.55, 0.0])
    table = evaluate.residual_table(before, after, text)
    assert list(table.target) == ["Named", "gold", "Dumbledore", "Zzz/Yyy"]   # most left first
    named = table.iloc[0]
    assert named.kept == pytest.approx(100 * 0.55 / 0.6) and named.share_of_rest == pytest.approx(100 * 0.55 / 0.75)
    assert (named.answer_in_text, named.phrase_in_text) == (0, 0)
    gold = table.iloc[1]
    assert (gold.answer_in_text, gold.phrase_in_text) == (1, 1)        # "scarlet and gold": after "and"
    assert tuple(table.iloc[2][["answer_in_text", "phrase_in_text"]]) == (1, 0)   # named, never after "Albus"
    assert math.isnan(table.iloc[3].kept) and table.share_of_rest.sum() == pytest.approx(100)
    lines = evaluate.residual_summary(table)
    assert lines[0] == ("The 1 probe whose phrase the training text shows (the answer right after the prompt's last "
                        "word) lost 5% of its target probability (0.200 -> 0.190, summed).")
    assert lines[1] == ("The 3 probes whose phrase it never shows lost 44% of their target probability "
                        "(1.000 -> 0.560, summed).")
    assert lines[2].startswith("The 4 probes with the most left hold 100% of all that is left") and '"He Who Must Not Be" -> Named (0.55)' in lines[2]


def test_residual_table_reads_real_token_tables_and_refuses_mismatches(tiny_model, tiny_tokenizer):
    probes = [probe.TokenProbe(id="a", prompt="Harry Potter studies", target=(" magic",), generic=(" math",)),
              probe.TokenProbe(id="b", prompt="The owl flew over the", target=(" castle",), generic=(" house",))]
    table = probe.token_familiarity(tiny_model, tiny_tokenizer, probes, 2, progress=False)
    other = probe.token_familiarity(make_tiny_model(len(tiny_tokenizer), seed=3), tiny_tokenizer, probes, 2, progress=False)
    rest = evaluate.residual_table(table, other, TEXTS[0])
    assert set(rest.target) == {"magic", "castle"} and rest.p_after.is_monotonic_decreasing
    assert dict(zip(rest.target, rest.answer_in_text)) == {"magic": 1, "castle": 1}
    assert dict(zip(rest.target, rest.phrase_in_text)) == {"magic": 1, "castle": 1}
    with pytest.raises(ValueError, match="same probes"):
        evaluate.residual_table(table, other.iloc[::-1], TEXTS[0])
    with pytest.raises(ValueError, match="training text"):
        evaluate.residual_table(table, other, "  ")
    assert evaluate.residual_summary(rest.iloc[:0]) == ["no probes to read"]


# ----------------------------------------------------------------- the measure memo
MEMO_TOKEN = [probe.TokenProbe(f"hp-tok-{i:03d}", p, (t,), (" the", " a"))
              for i, (p, t) in enumerate([("Harry Potter studies", " magic"), ("Ron and Hermione are", " friends"),
                                          ("The owl flew over the", " castle"), ("A cat sat on the", " mat"),
                                          ("The capital of France is", " Paris")], start=1)]
MEMO_GK = [probe.KnowledgeProbe("k1", "The capital of France is", " Paris", (" Rome", " Oslo")),
           probe.KnowledgeProbe("k2", "A cat sat on the", " mat", (" moon",))]


def _counting(model):
    rows = []
    hook = model.register_forward_hook(lambda module, args, kwargs, out: rows.append(len(kwargs["input_ids"])),
                                       with_kwargs=True)
    return rows, hook


def test_scoring_sums_per_text_add_up_to_the_sums_over_all_texts(tiny_model, tiny_tokenizer):
    other = make_tiny_model(len(tiny_tokenizer), seed=1)
    pair = ModelPair(other, base=tiny_model)
    nll, kl = scoring.nll_by_text(other, tiny_tokenizer, TEXTS, block_size=16), \
        scoring.kl_by_text(pair, tiny_tokenizer, TEXTS, block_size=16)
    for i, text in enumerate(TEXTS):   # each text's part is what scoring it alone gives
        assert nll[i] == pytest.approx(scoring.nll_sum(other, tiny_tokenizer, [text], block_size=16), rel=1e-6)
        alone = scoring.kl_divergence(pair, tiny_tokenizer, [text], block_size=16)
        assert kl[i][0] / kl[i][1] == pytest.approx(alone, rel=1e-5) and kl[i][1] == nll[i][1]
    assert sum(n for _, n in nll) == sum(len(c) - 1 for c in scoring.chunk_texts(tiny_tokenizer, TEXTS, 16))
    reference = scoring.BaseReference(tiny_model, tiny_tokenizer, TEXTS, block_size=16, batch_size=3)
    for (k, l, n), (k2, n2), (l2, n3) in zip(reference.by_text(other), kl, nll):
        assert (k, l) == pytest.approx((k2, l2), rel=1e-5) and n == n2 == n3


def test_a_memo_measures_each_probe_and_text_once(tmp_path, tiny_model, tiny_tokenizer):
    other = make_tiny_model(len(tiny_tokenizer), seed=1)
    identity = measure_memo.model_identity(other, "tiny")
    everything = dict(knowledge_probes=MEMO_GK, eval_texts=TEXTS, kl_pair=ModelPair(other, base=tiny_model),
                      extra_token_probes={"indirect": MEMO_TOKEN[3:]})
    plain, plain_tables = evaluate.measure(other, tiny_tokenizer, MEMO_TOKEN, **everything, batch_size=2)
    path = tmp_path / "measures.json"
    first, first_tables = evaluate.measure(other, tiny_tokenizer, MEMO_TOKEN, **everything, batch_size=2,
                                           memo=measure_memo.MeasureMemo(path, identity))
    assert first == pytest.approx(plain, rel=1e-6) and path.is_file()
    pd.testing.assert_frame_equal(first_tables["token"], plain_tables["token"], rtol=1e-6)
    pd.testing.assert_frame_equal(first_tables["knowledge"], plain_tables["knowledge"])

    # another session, a subset of the probes and texts (a light measure), KL on one text from a reference:
    # nothing runs the model again, and the numbers are what measuring afresh gives
    reference = scoring.BaseReference(tiny_model, tiny_tokenizer, TEXTS[:1])
    light = dict(knowledge_probes=MEMO_GK[:1], eval_texts=TEXTS[1:3], extra_token_probes={"indirect": MEMO_TOKEN[4:]},
                 kl_reference=reference)
    fresh, fresh_tables = evaluate.measure(other, tiny_tokenizer, MEMO_TOKEN[:3], **light, batch_size=2)
    memo = measure_memo.MeasureMemo(path, identity)
    rows, hook = _counting(other)
    try:
        again, again_tables = evaluate.measure(other, tiny_tokenizer, MEMO_TOKEN[:3], **light, batch_size=2, memo=memo)
    finally:
        hook.remove()
    assert rows == [] and memo.reads == 3 + 1 + 1 + 2 + 1   # token, indirect, knowledge, texts, KL text
    # a first measure reads nothing back, though its KL passes already scored the reference text's NLL
    new = measure_memo.MeasureMemo(tmp_path / "new.json", identity)
    evaluate.measure(other, tiny_tokenizer, MEMO_TOKEN[:3], **{**light, "eval_texts": TEXTS}, memo=new)
    assert new.reads == 0
    assert again == pytest.approx(fresh, rel=1e-5)
    pd.testing.assert_frame_equal(again_tables["token"], fresh_tables["token"], rtol=1e-6)

    # an edited probe and a new text are measured, the rest read; the memo keeps them for next time
    edited = [dataclasses.replace(MEMO_TOKEN[0], prompt="Harry Potter teaches")] + MEMO_TOKEN[1:3]
    rows, hook = _counting(other)
    try:
        numbers, tables = evaluate.measure(other, tiny_tokenizer, edited, eval_texts=TEXTS[:1] + ["A new text here."],
                                           memo=measure_memo.MeasureMemo(path, identity))
    finally:
        hook.remove()
    assert rows and tables["token"].p_target.tolist()[1:] == pytest.approx(fresh_tables["token"].p_target.tolist()[1:])
    expected = probe.token_familiarity(other, tiny_tokenizer, edited[:1], progress=False).p_target[0]
    assert tables["token"].p_target[0] == pytest.approx(expected, rel=1e-6)
    assert numbers["perplexity"] == pytest.approx(scoring.perplexity(other, tiny_tokenizer, TEXTS[:1] + ["A new text here."]),
                                                  rel=1e-6)
    assert measure_memo.MeasureMemo(path, identity).reads == 0   # counts this session's reads only
    saved = json.loads(path.read_text())
    assert len(saved["probes"]["token"]) == len(MEMO_TOKEN) + 1 and len(saved["texts"]) == len(TEXTS) + 1


def test_a_memo_of_another_model_is_not_read(tmp_path, tiny_model, tiny_tokenizer):
    path = tmp_path / "measures.json"
    evaluate.measure(tiny_model, tiny_tokenizer, MEMO_TOKEN, eval_texts=TEXTS[:1],
                     memo=measure_memo.MeasureMemo(path, measure_memo.model_identity(tiny_model, "tiny")))
    other = make_tiny_model(len(tiny_tokenizer), seed=1)
    for identity in (measure_memo.model_identity(other, "tiny-2"),
                     {**measure_memo.model_identity(other, "tiny"), "dtype": "x"}):
        memo = measure_memo.MeasureMemo(path, identity)
        numbers, tables = evaluate.measure(other, tiny_tokenizer, MEMO_TOKEN, eval_texts=TEXTS[:1], memo=memo)
        assert memo.reads == 0
        expected = probe.token_familiarity(other, tiny_tokenizer, MEMO_TOKEN, progress=False)
        assert tables["token"].p_target.tolist() == pytest.approx(expected.p_target.tolist(), rel=1e-6)
        assert json.loads(path.read_text())["identity"] == identity   # replaced by this model's


def test_model_identity_follows_the_adapter_files(tmp_path, tiny_model):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights one")
    first = measure_memo.model_identity(tiny_model, "tiny", adapter)
    assert first == measure_memo.model_identity(tiny_model, "tiny", adapter) and first["adapter_sha256"]
    (adapter / "adapter_model.safetensors").write_bytes(b"weights two")   # retrained
    assert measure_memo.model_identity(tiny_model, "tiny", adapter) != first
    assert measure_memo.model_identity(tiny_model, "tiny")["adapter_sha256"] is None
    assert measure_memo.model_identity(tiny_model, "tiny")["device"] == "cpu"
    with pytest.raises(FileNotFoundError, match="adapter directory"):
        measure_memo.model_identity(tiny_model, "tiny", tmp_path / "nowhere")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"identity": {}, "probes": []}', "\udcff"])
def test_a_broken_memo_is_refused_with_what_to_do(tmp_path, tiny_model, content):
    path = tmp_path / "measures.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(measure_memo.MemoError, match="delete it"):
        measure_memo.MeasureMemo(path, measure_memo.model_identity(tiny_model, "tiny"))


# ----------------------------------------------------------------- one formula per change, the course's measures
def test_drop_rise_and_share_in_percent_are_the_formulas_of_the_course():
    assert scoring.drop_pct(0.244, 0.006) == pytest.approx(97.54, abs=0.01)       # the paper's drop
    assert scoring.rise_pct(20.0, 20.6) == pytest.approx(3.0)
    assert scoring.share_pct(0.1, 0.4) == pytest.approx(25.0)
    assert scoring.drop_pct(0.2, 0.3) < 0 and scoring.rise_pct(20.0, 19.0) < 0     # worse / better: the sign says
    assert scoring.PERPLEXITY_LIMIT_PCT == 3.0
    torch.manual_seed(0)
    for before, after in (torch.rand(50, 2).double() + 0.01).tolist():   # bit for bit the formulas they replaced
        assert scoring.drop_pct(before, after) == 100 * (1 - after / before)
        assert scoring.rise_pct(before, after) == 100 * (after / before - 1)
        assert scoring.share_pct(after, before) == 100 * after / before
    column = pd.Series([0.1, 0.2])
    assert scoring.drop_pct(column, column / 2).tolist() == pytest.approx([50.0, 50.0])
    rel = evaluate.relative_to({"token_familiarity": 0.244, "perplexity": 20.0},
                               {"token_familiarity": 0.006, "perplexity": 20.6})
    assert rel == {"familiarity_drop": scoring.drop_pct(0.244, 0.006), "perplexity_rise": scoring.rise_pct(20.0, 20.6)}


def _cfg(**over):
    from nbsupport import config
    return config.Config({"n_token_probes": 10, "n_knowledge_probes": 6, "eval_completions": 3, "eval_text_files": 4,
                          "kl_text_files": 1, "completion_tokens": 40, **over})


def test_the_course_measures_take_the_profiles_probes_and_texts():
    cfg = _cfg()
    full = evaluate.full_inputs(cfg)
    assert [len(full[k]) for k in ("token_probes", "knowledge_probes", "completion_prompts")] == [10, 6, 3]
    assert len(full["extra_token_probes"]["indirect"]) == 10 and full["unique_terms"]
    assert full["eval_texts"] == corpus.heldout_texts(limit=4) and full["kl_texts"] == corpus.heldout_texts(limit=1)
    assert full["nearby_texts"] == corpus.load_eval_texts("nearby")[:4]
    light = evaluate.light_inputs(full, cfg)
    assert set(light) == {"token_probes", "extra_token_probes", "knowledge_probes", "eval_texts", "stated_text"}
    assert full["stated_text"] is None and light["stated_text"] is None
    assert evaluate.light_inputs(evaluate.full_inputs(cfg, stated_text="T"), cfg)["stated_text"] == "T"
    assert light["token_probes"] is full["token_probes"] and light["eval_texts"] == corpus.heldout_texts(limit=4)
    assert evaluate.light_inputs(full, _cfg(eval_text_files=None))["eval_texts"] == corpus.heldout_texts(limit=5)
    seven = evaluate.methods_inputs(cfg)
    report = probe.split(probe.load_probes("hp_token"), "report")
    assert seven["token_probes"] == report[:10] and seven["completion_tokens"] == 24
    assert all(p in probe.split(probe.load_probes("hp_indirect"), "report") for p in seven["extra_token_probes"]["indirect"])
    assert seven["completion_prompts"] == probe.split(probe.load_probes("hp_completion"), "report")[:6]
    assert seven["eval_texts"] == corpus.heldout_texts(limit=3) and "kl_texts" not in seven



def test_token_measures_split_by_whether_the_text_states_the_answer_phrase(tiny_model, tiny_tokenizer):
    from nbsupport import probe as probe_mod

    probes = [probe_mod.TokenProbe(f"p{i}", prompt, (target,), (" the",))
              for i, (prompt, target) in enumerate([("The house colours are scarlet and", " gold"),
                                                     ("He rode a", " broom"), ("She cast a", " spell"),
                                                     ("They ate", " soup")])]
    text = "The banner was scarlet and gold. Nobody rode anything. She cast a spell at noon."
    assert evaluate.stated_ids(probes, text) == {"p0", "p2"}
    assert evaluate.phrase_count("colours are scarlet and", "gold/red", "Scarlet and GOLD, scarlet and red") == 2
    numbers, tables = evaluate.measure(tiny_model, tiny_tokenizer, probes, stated_text=text)
    table = tables["token"].set_index("id")
    assert numbers["token_familiarity_in_text"] == pytest.approx(table.loc[["p0", "p2"], "p_target"].mean())
    assert numbers["token_familiarity_not_in_text"] == pytest.approx(table.loc[["p1", "p3"], "p_target"].mean())
    for part in ("dev", "report"):
        ids = {p.id for p in probe_mod.split(probes, part)}
        stated = sorted(ids & {"p0", "p2"})
        key = f"token_familiarity_in_text_{part}"
        if stated:
            assert numbers[key] == pytest.approx(table.loc[stated, "p_target"].mean())
        else:
            assert key not in numbers
    plain, _ = evaluate.measure(tiny_model, tiny_tokenizer, probes)
    assert not any("in_text" in k for k in plain)


def test_a_measure_can_be_split_again_by_another_text(tiny_model, tiny_tokenizer):
    from nbsupport import probe as probe_mod

    probes = [probe_mod.TokenProbe(f"q{i}", prompt, (target,), (" the",))
              for i, (prompt, target) in enumerate([("colours are scarlet and", " gold"), ("He rode a", " broom")])]
    first, second = "scarlet and gold", "He rode a broom"
    _, tables = evaluate.measure(tiny_model, tiny_tokenizer, probes)
    for text in (first, second):
        direct, _ = evaluate.measure(tiny_model, tiny_tokenizer, probes, stated_text=text)
        again = evaluate.stated_numbers(tables, probes, None, text)
        assert again == {k: v for k, v in direct.items() if "in_text" in k} and again
