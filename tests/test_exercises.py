"""The notebook exercises: every check passes the reference solution, fails a typical
wrong answer with a helpful message, reports an unwritten stub instead of raising,
and the reference solutions agree with the course's own code."""
import re

import pytest
import torch
import torch.nn.functional as F

from nbsupport import dictionary, evaluate, exercises as ex, finetune, generic_labels, probe, scoring
from nbsupport.exercises import AnchorSpan
from nbsupport.pair import generic_logits


def run_check(capsys, name, answer, **kwargs):
    """(result, printed text) of ``check_<name>(answer)``."""
    result = getattr(ex, f"check_{name}")(answer, **kwargs)
    return result, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------- the catalogue
def test_at_least_two_exercises_per_notebook_each_with_a_check_and_a_solution():
    assert sorted(ex.EXERCISES) == ["01", "02", "03", "04", "05", "06"]
    names = [n for group in ex.EXERCISES.values() for n in group]
    assert all(len(group) >= 2 for group in ex.EXERCISES.values()) and len(names) >= 12
    for name in names:
        assert callable(getattr(ex, f"check_{name}"))
        assert ex.solution(name) is not None


@pytest.mark.parametrize("name", [n for group in ex.EXERCISES.values() for n in group])
def test_the_reference_solution_passes(capsys, name):
    result, out = run_check(capsys, name, ex.solution(name))
    assert result is True, out
    assert "✗" not in out and "All checks passed." in out


@pytest.mark.parametrize("name", [n for group in ex.EXERCISES.values() for n in group
                                  if n not in ("alpha_puzzle", "anchor_quiz", "probe")])
def test_an_unwritten_stub_is_reported_not_raised(capsys, name):
    result, out = run_check(capsys, name, stub)
    assert result is False
    assert "not implemented yet: write your code in the cell above" in out


def test_unanswered_quizzes_are_reported_not_raised(capsys):
    result, out = run_check(capsys, "probe", None)
    assert result is False and "not implemented yet: write your code in the cell above" in out
    result, out = run_check(capsys, "anchor_quiz", {term: None for term in ex.ANCHOR_QUIZ})
    assert result is False and "answer True or False for every term" in out
    result, out = run_check(capsys, "alpha_puzzle", {"alpha": None, "token": None, "token_sure": None})
    assert result is False and "fill in all three answers" in out


def test_a_crash_in_the_learners_code_raises_with_the_case_named(capsys):
    def broken(v_b, v_r, alpha):
        return v_b[100]
    with pytest.raises(IndexError):
        ex.check_generic_logits(broken)
    assert "your function raised an error on shape (7,)" in capsys.readouterr().out


def test_solution_lookup_and_the_batch_flag():
    with pytest.raises(KeyError, match="generic_logits"):
        ex.solution("nope")
    answers = ex.solution("anchor_quiz")
    answers["wand"] = True                      # a copy: the reference stays intact
    assert ex.solution("anchor_quiz")["wand"] is False
    assert ex.fill_solutions(None, interactive=False) is True
    assert ex.fill_solutions(None, interactive=True) is False
    assert ex.fill_solutions(True, interactive=True) is True
    assert ex.fill_solutions(False, interactive=False) is False


# ----------------------------------------------------------------- 01
def test_continuation_logprob_reference_equals_scoring_on_a_model(tiny_model, tiny_tokenizer):
    pairs = [("Harry Potter studies", " magic at a school"), ("The capital of France is", " Paris")]
    expected = scoring.continuation_logprobs(tiny_model, tiny_tokenizer, pairs)
    for (prompt, cont), exp in zip(pairs, expected):
        ids, start = scoring.split_joint(tiny_tokenizer, prompt, cont)
        with torch.no_grad():
            logits = tiny_model(input_ids=torch.tensor([ids])).logits[0]
        assert torch.allclose(ex.solution_continuation_logprob(logits, ids, start), exp, atol=1e-4)


def test_continuation_logprob_on_the_model(capsys, tiny_model, tiny_tokenizer):
    result, out = run_check(capsys, "continuation_logprob", ex.solution("continuation_logprob"),
                            model=tiny_model, tok=tiny_tokenizer)
    assert result is True and "as scoring.continuation_logprobs computes" in out


def test_continuation_logprob_without_the_shift_fails(capsys):
    def no_shift(logits, ids, start):
        logp = torch.log_softmax(logits, -1)
        return sum(logp[t, ids[t]] for t in range(start, len(ids)))
    result, out = run_check(capsys, "continuation_logprob", no_shift)
    assert result is False and "row t of the logits predicts token t+1" in out


def test_continuation_logprob_returning_a_probability_fails(capsys):
    def prob(logits, ids, start):
        return ex.solution_continuation_logprob(logits, ids, start).exp()
    result, out = run_check(capsys, "continuation_logprob", prob)
    assert result is False and "not the probability" in out


def test_probe_is_scored_on_a_model(capsys, tiny_model, tiny_tokenizer):
    result, out = run_check(capsys, "probe", ex.solution("probe"), model=tiny_model, tok=tiny_tokenizer)
    assert result is True and "scored: P(target) = " in out


@pytest.mark.parametrize("bad, message", [
    (dict(prompt="Harry's owl is called ", target=("Hedwig",)), "ends with whitespace"),
    (dict(prompt="Hedwig is Harry's owl. Harry's owl is called"), "the prompt already contains [' Hedwig']"),
    (dict(generic=(" Hermione", " Max")), "contain Harry Potter terms"),
    (dict(generic=(" Hedwig", " Max")), "is both target and generic"),
    (dict(target=" Hedwig"), "a bare string would be read letter by letter"),
])
def test_a_faulty_probe_fails_with_the_reason(capsys, bad, message):
    fields = dict(id="p", prompt="Harry's owl is called", target=(" Hedwig",), generic=(" Max", " Bob"))
    result, out = run_check(capsys, "probe", probe.TokenProbe(**{**fields, **bad}))
    assert result is False and message in out


# ----------------------------------------------------------------- 02
def test_generic_logits_solution_is_the_package_formula():
    v_b, v_r = torch.randn(3, 17), torch.randn(3, 17)
    assert torch.equal(ex.solution_generic_logits(v_b, v_r, 5.0), generic_logits(v_b, v_r, 5.0))


@pytest.mark.parametrize("wrong, message", [
    (lambda v_b, v_r, a: v_b - a * (v_r - v_b), "clip the difference with ReLU"),
    (lambda v_b, v_r, a: v_b - torch.relu(a * v_r - v_b), "alpha multiplies the difference"),
    (lambda v_b, v_r, a: v_r - a * torch.relu(v_r - v_b), "start from v_B"),
])
def test_generic_logits_typical_mistakes_fail_with_a_hint(capsys, wrong, message):
    result, out = run_check(capsys, "generic_logits", wrong)
    assert result is False and message in out


def test_alpha_puzzle_wrong_predictions_are_explained(capsys):
    result, out = run_check(capsys, "alpha_puzzle", {"alpha": 5, "token": " Ginny", "token_sure": " her"})
    assert result is False
    assert "alpha should be 1" in out and "sinks faster" in out and "alpha > 12" in out
    assert "top ' her'" in out                      # the table is shown after the answers


def test_alpha_puzzle_answers_follow_from_the_formula():
    p, tokens = ex.ALPHA_PUZZLE, ex.ALPHA_PUZZLE["tokens"]
    answer = ex.solution("alpha_puzzle")

    def top(vb, vr, alpha):
        return tokens[int(generic_logits(torch.tensor(p[vb]), torch.tensor(p[vr]), alpha).argmax())]
    assert top("v_b", "v_r", answer["alpha"] - 0.01) == " Hermione"
    assert top("v_b", "v_r", answer["alpha"] + 0.01) == answer["token"]
    assert top("v_b_sure", "v_r_sure", 5.0) == answer["token_sure"]


# ----------------------------------------------------------------- 03
def test_anchor_quiz_agrees_with_the_curated_dictionary():
    keys = set(dictionary.builtin_dictionary().keys())
    for term, is_anchor in ex.solution("anchor_quiz").items():
        assert (term in keys) == is_anchor, term


def test_anchor_quiz_wrong_and_missing_answers(capsys):
    answers = {**ex.solution("anchor_quiz"), "wand": True}
    result, out = run_check(capsys, "anchor_quiz", answers)
    assert result is False and "'wand' is not an anchor: an ordinary English word" in out
    result, out = run_check(capsys, "anchor_quiz", {"wand": False})
    assert result is False and "missing or not a bool" in out


def sequential_replace(text, mapping):
    for k, v in mapping.items():
        text = text.replace(k, v)
    return text


def longest_first_without_boundaries(text, mapping):
    if not mapping:
        return text
    keys = sorted(mapping, key=len, reverse=True)
    return re.sub("|".join(map(re.escape, keys)), lambda m: mapping[m.group(0)], text)


def test_replace_terms_typical_mistakes_fail_with_a_hint(capsys):
    result, out = run_check(capsys, "replace_terms", sequential_replace)
    assert result is False and "longest match first" in out and "replace in ONE pass" in out
    result, out = run_check(capsys, "replace_terms", longest_first_without_boundaries)
    assert result is False and "whole words only" in out
    assert "longest match first" not in out


@pytest.mark.parametrize("wrong, message", [
    (lambda keys: [k for k in keys if not k.endswith("'s")], "keep \"X's\" when X is NOT a key"),
    (lambda keys: [k for k in keys if not (" " in k and any(w in keys for w in k.split()))],
     "only when ALL its words are keys"),
])
def test_merge_rules_typical_mistakes_fail_with_a_hint(capsys, wrong, message):
    result, out = run_check(capsys, "merge_rules", wrong)
    assert result is False and message in out


# ----------------------------------------------------------------- 04
def test_token_mapping_reference_equals_align_block_on_a_real_tokenizer(embedded_tokenizer):
    cases = ex.mapping_cases_from(embedded_tokenizer)
    assert len(cases) == len(ex.MAPPING_SENTENCES)
    for original, translated, anchors, source in cases:
        assert ex.solution_token_mapping(original, translated, anchors) == source


def test_token_mapping_check_uses_align_block_when_given_a_tokenizer(capsys, embedded_tokenizer):
    result, out = run_check(capsys, "token_mapping", ex.solution("token_mapping"), tok=embedded_tokenizer)
    assert result is True and "matches generic_labels.align_block on 3 sentences" in out


def test_token_mapping_check_with_the_tiny_tokenizer_keeps_only_cases_the_rules_cover(capsys, tiny_tokenizer):
    result, out = run_check(capsys, "token_mapping", ex.solution("token_mapping"), tok=tiny_tokenizer)
    assert result is True


def first_token_mapped(original, translated, anchors):
    source = ex.solution_token_mapping(original, translated, anchors)
    for a in anchors:
        if a.first:
            source[a.end - 1], source[a.start] = -1, a.new_start
    return source


def repeats_trained(original, translated, anchors):
    return ex.solution_token_mapping(original, translated, [a._replace(first=True) for a in anchors])


def repeat_predecessor_trained(original, translated, anchors):
    source = ex.solution_token_mapping(original, translated, anchors)
    fixed = ex.solution_token_mapping(original, translated, [a._replace(first=True) for a in anchors])
    for a in anchors:
        if not a.first and a.start > 0 and not any(b.start <= a.start - 1 < b.end for b in anchors):
            source[a.start - 1] = fixed[a.start - 1]
    return source


def no_shift(original, translated, anchors):
    source = ex.solution_token_mapping(original, translated, anchors)
    inside = {p for a in anchors for p in range(a.start, a.end)}
    return [p if (p not in inside and s != -1) else s for p, s in enumerate(source)]


MAPPING_MISTAKES = [
    ("token_mapping", first_token_mapped, "the LAST token of an anchor maps to the LAST token of its translation"),
    ("token_mapping", repeats_trained, "a repeated anchor (first=False) is not trained"),
    ("token_mapping", repeat_predecessor_trained, "the position just before a repeated anchor predicts its first token"),
    ("token_mapping", no_shift, "plus the number of tokens the anchors before it added"),
]


def test_token_mapping_hand_case_is_the_documented_one():
    original, translated, anchors = ex._MAPPING_HAND
    assert ex.solution_token_mapping(original, translated, anchors) == [0, 1, 2, -1, 5, 6, 7, -1, -1, 10, 11]
    assert anchors[1] == AnchorSpan(3, 5, 3, 6, True)


def test_forbid_translations_solution_equals_combine():
    logits = torch.randn(7, 12)
    forbidden = [(1, [2, 3]), (4, [3, 9])]
    assert torch.allclose(ex.solution_forbid_translations(logits, forbidden),
                          generic_labels.combine(logits.clone(), logits.clone(), 0.0, forbidden))


def minus_inf(logits, forbidden):
    out = logits.clone()
    for start, ids in forbidden:
        out[start:, list(ids)] = float("-inf")
    return out


def exclusive_start(logits, forbidden):
    out, mean = logits.clone(), logits.mean(-1)
    for start, ids in forbidden:
        for p in range(start + 1, len(out)):
            out[p, list(ids)] = mean[p]
    return out


def in_place(logits, forbidden):
    mean = logits.mean(-1)
    for start, ids in forbidden:
        for p in range(start, len(logits)):
            logits[p, list(ids)] = mean[p]
    return logits


@pytest.mark.parametrize("name, wrong, message", MAPPING_MISTAKES + [
    ("forbid_translations", minus_inf, "set them to the row's MEAN logit, not -inf"),
    ("forbid_translations", exclusive_start, "from the position `start` itself on"),
    ("forbid_translations", in_place, "your function changed the logits it was given: clone them first"),
])
def test_mapping_and_forbidding_mistakes_fail_with_the_rule(capsys, name, wrong, message):
    result, out = run_check(capsys, name, wrong)
    assert result is False and message in out


# ----------------------------------------------------------------- 05
def mean_over_all_positions(logits, topk_ids, topk_values, labels):
    logp = torch.log_softmax(logits[:, :-1], -1)
    return -(torch.softmax(topk_values[:, 1:], -1) * logp.gather(-1, topk_ids[:, 1:])).sum(-1).mean()


def soft_no_shift(logits, topk_ids, topk_values, labels):
    logp = torch.log_softmax(logits, -1)
    per = -(torch.softmax(topk_values, -1) * logp.gather(-1, topk_ids)).sum(-1)
    mask = (labels != -100).float()
    return (per * mask).sum() / mask.sum()


@pytest.mark.parametrize("wrong, message", [
    (mean_over_all_positions, "average over TRAINED positions only"),
    (soft_no_shift, "position t's logits predict token t+1"),
])
def test_soft_cross_entropy_typical_mistakes_fail_with_a_hint(capsys, wrong, message):
    result, out = run_check(capsys, "soft_cross_entropy", wrong)
    assert result is False and message in out


def test_kl_retain_solution_equals_the_finetuning_term(tiny_pair):
    ids = torch.randint(2, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    v_b, v_u = tiny_pair.logits(ids)
    with torch.no_grad():
        expected = finetune.kl_retain(tiny_pair.model, ids)
    assert torch.allclose(ex.solution_kl_retain(v_u, v_b), expected, atol=1e-5)
    assert not torch.allclose(ex.solution_kl_retain(v_b, v_u), expected, atol=1e-5)   # direction matters


@pytest.mark.parametrize("wrong, message", [
    (lambda logits, base: F.kl_div(torch.log_softmax(base, -1), torch.log_softmax(logits, -1),
                                   log_target=True, reduction="none").sum(-1).mean(), "wrong direction"),
    (lambda logits, base: F.kl_div(torch.log_softmax(logits, -1), torch.log_softmax(base, -1),
                                   log_target=True, reduction="mean"), "divides by the vocabulary size"),
])
@pytest.mark.filterwarnings("ignore:reduction")   # the wrong answer's reduction='mean' warns
def test_kl_retain_typical_mistakes_fail_with_a_hint(capsys, wrong, message):
    result, out = run_check(capsys, "kl_retain", wrong)
    assert result is False and message in out


# ----------------------------------------------------------------- 06
def test_relative_change_solution_equals_relative_to():
    base = {"token_familiarity": 0.3, "perplexity": 12.0, "knowledge_accuracy": 0.7}
    after = {"token_familiarity": 0.01, "perplexity": 12.5, "knowledge_accuracy": 0.69}
    expected = evaluate.relative_to(base, after)
    got = ex.solution_relative_change(base, after)
    assert got.keys() == expected.keys() and all(abs(got[k] - expected[k]) < 1e-9 for k in got)


@pytest.mark.parametrize("wrong, message", [
    (lambda b, n: {"familiarity_drop": 1 - n["token_familiarity"] / b["token_familiarity"],
                   "perplexity_rise": n["perplexity"] / b["perplexity"] - 1,
                   "knowledge_points": n["knowledge_accuracy"] - b["knowledge_accuracy"]},
     "a percentage: multiply by 100"),
    (lambda b, n: {**ex.solution_relative_change(b, n),
                   "perplexity_rise": 100 * (b["perplexity"] / n["perplexity"] - 1)},
     "relative to the BASELINE: 100 * (after / before - 1)"),
    (lambda b, n: {**ex.solution_relative_change(b, n),
                   "knowledge_points": 100 * (n["knowledge_accuracy"] / b["knowledge_accuracy"] - 1)},
     "percentage POINTS"),
])
def test_relative_change_typical_mistakes_fail_with_a_hint(capsys, wrong, message):
    result, out = run_check(capsys, "relative_change", wrong)
    assert result is False and message in out


def test_judge_solution_is_the_courses_judge_and_the_cases_cover_every_score():
    assert ex.solution("judge") is evaluate.judge_offline
    assert sorted({evaluate.judge_offline(p, c, ex.JUDGE_TERMS) for p, c, _ in ex._JUDGE_CASES}) == [0, 1, 2, 3]


def judge_ignoring_the_prompt(prompt, completion, unique_terms, theme_terms):
    if any(t.lower() in completion.lower() for t in unique_terms):
        return 3
    if any(t.lower() in completion.lower() for t in theme_terms):
        return 2
    return 0


def test_judge_that_ignores_the_prompt_fails_with_the_reason(capsys):
    result, out = run_check(capsys, "judge", judge_ignoring_the_prompt)
    assert result is False
    assert "should score 1, got 3. Why: it only repeats what the prompt gave" in out
    assert "match whole words (terms.added does)" in out
