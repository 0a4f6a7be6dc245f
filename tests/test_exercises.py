"""The notebook exercises: every check passes the reference solution, fails a typical
and a subtly wrong answer with a helpful message, reports an unwritten stub instead of
raising, judges by expected values of its own (never by the solution), and raises in
batch runs; the expected values and the reference solutions agree with the course's
own code and with formulas written here."""
import math
import random
import re

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from nbsupport import attacks, evaluate, exercises as ex, finetune, generic_labels, pair, probe, scoring
from nbsupport.anchors import dictionary
from nbsupport.exercises import AnchorSpan, harness, nb01, nb02, nb03, nb04, nb05, nb06, nb07
from nbsupport.pair import generic_logits

MODULES = (nb01, nb02, nb03, nb04, nb05, nb06, nb07)
NAMES = [n for group in ex.EXERCISES.values() for n in group]
FUNCTIONS = [n for n in NAMES if n not in ("alpha_puzzle", "anchor_quiz", "probe")]
# the reference solutions the wrong answers below are built on (tests may patch the modules' names)
MERGE_RULES, TOKEN_MAPPING = nb03.solution_merge_rules, nb04.solution_token_mapping
RELATIVE_CHANGE = nb06.solution_relative_change


@pytest.fixture(autouse=True)
def _interactive(monkeypatch):
    """Every test starts as a learner would (a ✗ returns False) and leaves no batch flag behind."""
    monkeypatch.setattr(harness, "_batch_run", False)


def run_check(capsys, name, answer, **kwargs):
    """(result, printed text) of ``check_<name>(answer)``."""
    result = getattr(ex, f"check_{name}")(answer, **kwargs)
    return result, capsys.readouterr().out


def stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------- the catalogue
def test_at_least_two_exercises_per_notebook_each_with_a_check_and_a_solution():
    assert sorted(ex.EXERCISES) == ["01", "02", "03", "04", "05", "06", "07"]
    assert all(len(group) >= 2 for group in ex.EXERCISES.values()) and len(NAMES) >= 14
    for name in NAMES:
        assert callable(getattr(ex, f"check_{name}"))
        assert ex.solution(name) is not None


def test_one_module_per_notebook_none_too_long():
    for module in (harness, *MODULES):
        with open(module.__file__, encoding="utf-8") as f:
            assert len(f.readlines()) <= 450, module.__name__
    for key, module in zip(sorted(ex.EXERCISES), MODULES):
        assert module.NAMES == ex.EXERCISES[key]
        assert all(hasattr(module, f"check_{name}") for name in module.NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_solution_passes(capsys, name):
    result, out = run_check(capsys, name, ex.solution(name))
    assert result is True, out
    assert "✗" not in out and "All checks passed." in out


@pytest.mark.parametrize("name", FUNCTIONS)
def test_an_unwritten_stub_is_reported_not_raised(capsys, name):
    result, out = run_check(capsys, name, stub)
    assert result is False
    assert "not implemented yet: write your code in the cell above" in out


def test_unanswered_quizzes_are_reported_not_raised(capsys):
    result, out = run_check(capsys, "probe", None)
    assert result is False and "not implemented yet: write your code in the cell above" in out
    result, out = run_check(capsys, "anchor_quiz", {term: None for term in nb03.ANCHOR_QUIZ})
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
    assert ex.fill_solutions(None, interactive=False) is True and harness.batch_run()
    assert ex.fill_solutions(None, interactive=True) is False and not harness.batch_run()
    assert ex.fill_solutions(True, interactive=True) is True and harness.batch_run()
    assert ex.fill_solutions(False, interactive=False) is False and not harness.batch_run()


# ----------------------------------------------------------------- batch runs
def relu_forgotten(v_b, v_r, alpha):
    return v_b - alpha * (v_r - v_b)


def test_in_a_batch_run_a_failed_check_raises_naming_the_exercise_and_the_case(capsys):
    assert ex.fill_solutions(None, interactive=False) is True     # papermill: INTERACTIVE = False
    with pytest.raises(ex.ExerciseFailed, match="exercise 'generic_logits' failed in a batch run") as err:
        ex.check_generic_logits(relu_forgotten)
    assert "v_R = [5.0, 3.5, 3.0, 0.5], alpha = 2 should give [2.0, -1.0, 3.0, 1.0]" in str(err.value)
    assert "more ✗" in str(err.value)
    out = capsys.readouterr().out
    assert "✗ " in out and "Some checks failed" in out        # the report is still printed first


def test_in_a_batch_run_a_stub_raises(capsys):
    ex.fill_solutions(True, interactive=True)                  # SOLUTIONS = True fills them in too
    with pytest.raises(ex.ExerciseFailed, match="'kl_retain'.*not implemented yet"):
        ex.check_kl_retain(stub)


def test_interactively_a_failed_check_prints_and_returns_false(capsys):
    assert ex.fill_solutions(None, interactive=True) is False
    result, out = run_check(capsys, "generic_logits", relu_forgotten)
    assert result is False and "✗ " in out and "clip the difference with ReLU" in out
    ex.fill_solutions(False, interactive=False)                # SOLUTIONS = False: a learner's batch run
    result, out = run_check(capsys, "judge", lambda *args: 0)
    assert result is False and "should score 3, got 0" in out


@pytest.mark.parametrize("name", NAMES)
def test_in_a_batch_run_the_solutions_pass_without_raising(capsys, name):
    ex.fill_solutions(None, interactive=False)
    result, out = run_check(capsys, name, ex.solution(name))
    assert result is True and "✗" not in out


# ----------------------------------------------------------------- subtly wrong answers fail every check
def logprob_over_positions(logits, ids, start):
    logp = torch.log_softmax(logits, 0)                      # normalised over the wrong dimension
    return sum(logp[t - 1, ids[t]] for t in range(start, len(ids)))


def generic_logits_abs(v_b, v_r, alpha):
    return v_b - alpha * (v_r - v_b).abs()                   # also pushes down what R lowered


def replace_between_spaces(text, mapping):
    if not mapping:
        return text
    keys = sorted(mapping, key=len, reverse=True)
    pattern = r"(?<!\S)(?:" + "|".join(map(re.escape, keys)) + r")(?!\S)"
    return re.sub(pattern, lambda m: mapping[m.group(0)], text)


def merge_rules_sorted(keys):
    return sorted(MERGE_RULES(keys))


def mapping_last_past_the_end(original, translated, anchors):
    source = TOKEN_MAPPING(original, translated, anchors)
    for a in anchors:
        if a.first:
            source[a.end - 1] = a.new_end
    return source


def forbid_with_running_means(logits, forbidden):
    out = logits.clone()
    for start, ids in forbidden:
        out[start:, list(ids)] = out[start:].mean(-1, keepdim=True)
    return out


def soft_mean_per_sequence(logits, topk_ids, topk_values, labels):
    logp = torch.log_softmax(logits[:, :-1], -1)
    per = -(torch.softmax(topk_values[:, 1:], -1) * logp.gather(-1, topk_ids[:, 1:])).sum(-1)
    trained = (labels[:, 1:] != -100).float()
    return ((per * trained).sum(-1) / trained.sum(-1).clamp(min=1)).mean()


def kl_batchmean(logits, base):
    return F.kl_div(torch.log_softmax(logits, -1), torch.log_softmax(base, -1), log_target=True,
                    reduction="batchmean")


def relative_change_log_ratio(b, n):
    return {**RELATIVE_CHANGE(b, n),
            "perplexity_rise": 100 * math.log(n["perplexity"] / b["perplexity"])}


def judge_by_substring(prompt, completion, unique_terms, theme_terms):
    def found(terms, text):
        return [t for t in terms if t.lower() in text.lower()]
    new = [t for t in found(unique_terms, completion) if t not in found(unique_terms, prompt)]
    if new:
        return 3
    if [t for t in found(theme_terms, completion) if t not in found(theme_terms, prompt)]:
        return 2
    return 1 if found(unique_terms + tuple(theme_terms), completion) else 0


def comeback_counting_unrelearned(table):
    by_model = table.sort_values("step").groupby("model")["group B % of baseline"]
    rise = (by_model.last() - by_model.first()).drop("baseline")   # a step-0-only model "rises" 0
    return (rise.idxmax(), float(rise.max())) if len(rise) else None


def auc_divided_by_span_plus_one(steps, shares):
    area = sum((s1 - s0) * (y0 + y1) / 2 for s0, s1, y0, y1 in zip(steps, steps[1:], shares, shares[1:]))
    return area / (steps[-1] - steps[0] + 1)


SUBTLE = [   # (name, wrong answer, what the report says, the course's code it could have been compared with)
    ("continuation_logprob", logprob_over_positions, "log_softmax over the vocabulary (dim=-1)", []),
    ("generic_logits", generic_logits_abs, "where v_R < v_B everywhere nothing was raised",
     [(pair, "generic_logits", lambda wrong: wrong)]),
    ("replace_terms", replace_between_spaces, "but does change \"Ron's\"",
     [(dictionary, "translate", None)]),
    ("merge_rules", merge_rules_sorted, "(the right keys, but keep their order)",
     [(dictionary, "apply_merge_rules", None)]),
    ("token_mapping", mapping_last_past_the_end, "maps to the LAST token of its translation (new_end - 1)", []),
    ("forbid_translations", forbid_with_running_means, "take every row's mean once, BEFORE replacing",
     [(generic_labels, "combine", lambda wrong: lambda v_g, v_r, alpha, forbidden, positions=None:
       wrong(v_g, forbidden))]),
    ("soft_cross_entropy", soft_mean_per_sequence, "not per sequence then over sequences",
     [(finetune, "soft_cross_entropy", lambda wrong: wrong)]),
    ("kl_retain", kl_batchmean, "divides by the first dimension only", []),
    ("relative_change", relative_change_log_ratio, "not a log-ratio",
     [(evaluate, "relative_to", lambda wrong: wrong)]),
    ("judge", judge_by_substring, "match whole words (terms.added does)",
     [(evaluate, "judge_offline", lambda wrong: lambda p, c, u, t=evaluate.THEME_TERMS: wrong(p, c, u, t))]),
    ("alpha_puzzle", {"alpha": 1, "token": " her", "token_sure": " her"}, "it needs alpha > 12", []),
    ("anchor_quiz", {**ex.solution("anchor_quiz"), "Monday": True}, "the days of the week", []),
    ("biggest_comeback", comeback_counting_unrelearned, "a model with only its step-0 row was not relearned", []),
    ("relearning_auc", auc_divided_by_span_plus_one, "off by one: the curve spans last - first steps", []),
]


@pytest.mark.parametrize("name, wrong, message", [case[:3] for case in SUBTLE], ids=[c[0] for c in SUBTLE])
def test_a_subtly_wrong_answer_fails_with_a_hint(capsys, name, wrong, message):
    result, out = run_check(capsys, name, wrong)
    assert result is False and "✗" in out
    assert message in out


@pytest.mark.parametrize("name, wrong, refs", [(c[0], c[1], c[3]) for c in SUBTLE], ids=[c[0] for c in SUBTLE])
def test_the_verdict_comes_from_the_checks_expected_values_not_from_the_solution(monkeypatch, capsys,
                                                                                 name, wrong, refs):
    """Were the reference solution, and the course's code the check also compares with,
    wrong in the same way, the check would still fail the wrong answer."""
    monkeypatch.setitem(harness._SOLUTIONS, name, wrong)
    for module in MODULES:
        if hasattr(module, f"solution_{name}"):
            monkeypatch.setattr(module, f"solution_{name}", wrong)
    for module, attr, adapt in refs:
        monkeypatch.setattr(module, attr, adapt(wrong) if adapt else stub)   # stub: must not be called
    result, out = run_check(capsys, name, ex.solution(name))
    assert result is False and "✗" in out


def test_a_faulty_probe_with_two_leading_spaces_fails(capsys):
    p = probe.TokenProbe(id="p", prompt="Harry's owl is called", target=(" Hedwig",), generic=("  Max",))
    result, out = run_check(capsys, "probe", p)
    assert result is False and "must start with a single space" in out


# ----------------------------------------------------------------- 01
def test_continuation_logprob_hand_case_by_its_own_formula():
    h = nb01.LOGPROB_HAND
    logits, ids = torch.tensor(h["logits"]), torch.tensor(h["ids"])
    probs = torch.softmax(logits, -1)
    assert math.isclose(h["expected"], math.log(probs[0, 2] * probs[1, 0]), abs_tol=1e-6)
    assert math.isclose(h["expected"], -F.cross_entropy(logits[:2], ids[1:], reduction="sum").item(), abs_tol=1e-6)
    assert math.isclose(nb01.solution_continuation_logprob(logits, ids, h["start"]).item(), h["expected"],
                        abs_tol=1e-6)


def test_continuation_logprob_reference_equals_scoring_on_a_model(tiny_model, tiny_tokenizer):
    pairs = [("Harry Potter studies", " magic at a school"), ("The capital of France is", " Paris")]
    expected = scoring.continuation_logprobs(tiny_model, tiny_tokenizer, pairs)
    for (prompt, cont), exp in zip(pairs, expected):
        ids, start = scoring.split_joint(tiny_tokenizer, prompt, cont)
        with torch.no_grad():
            logits = tiny_model(input_ids=torch.tensor([ids])).logits[0]
        assert torch.allclose(nb01.solution_continuation_logprob(logits, ids, start), exp, atol=1e-4)


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
        return nb01.solution_continuation_logprob(logits, ids, start).exp()
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
def test_generic_logits_hand_case_by_the_package_formula_and_elementwise():
    h = nb02.GENERIC_HAND
    v_b, v_r = torch.tensor(h["v_b"]), torch.tensor(h["v_r"])
    assert generic_logits(v_b, v_r, h["alpha"]).tolist() == h["expected"]
    assert [b - h["alpha"] * max(r - b, 0.0) for b, r in zip(h["v_b"], h["v_r"])] == h["expected"]


def test_generic_logits_solution_is_the_package_formula():
    v_b, v_r = torch.randn(3, 17), torch.randn(3, 17)
    assert torch.equal(nb02.solution_generic_logits(v_b, v_r, 5.0), generic_logits(v_b, v_r, 5.0))


@pytest.mark.parametrize("wrong, message", [
    (relu_forgotten, "clip the difference with ReLU"),
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
    p, tokens = nb02.ALPHA_PUZZLE, nb02.ALPHA_PUZZLE["tokens"]
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


def test_replace_terms_expected_texts_are_those_of_dictionary_translate():
    for mapping, text, expected, _ in nb03.REPLACE_CASES:
        d = dictionary.AnchorDict(dictionary.Entry(k, [v]) for k, v in mapping.items())
        assert dictionary.translate(text, d).text == expected, text


def test_merge_rules_expected_keys_are_those_of_apply_merge_rules():
    for keys, expected, _ in nb03.MERGE_CASES:
        d = dictionary.AnchorDict(dictionary.Entry(k, [f"T{i}"]) for i, k in enumerate(keys))
        assert dictionary.apply_merge_rules(d).keys() == expected, keys


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
def test_token_mapping_hand_case_is_the_documented_one():
    original, translated, anchors, expected = nb04.MAPPING_HAND
    assert expected == [0, 1, 2, -1, 5, 6, 7, -1, -1, 10, 11]
    assert nb04.solution_token_mapping(original, translated, anchors) == expected
    assert anchors[1] == AnchorSpan(3, 5, 3, 6, True)
    assert [translated[s] for s in expected if s >= 0] == [
        "Jon", " went", " to", " Academy", " with", " Tom", " smiled", "."]


def test_token_mapping_random_cases_expected_by_construction_agree_with_the_rules():
    rng = random.Random(0)
    for _ in range(200):
        original, translated, anchors, expected = nb04.random_mapping_case(rng)
        assert len(expected) == len(original)
        assert nb04.solution_token_mapping(original, translated, anchors) == expected
        assert all(original[p] == translated[s] for p, s in enumerate(expected) if original[p].startswith(" w")
                   and s >= 0)


def test_token_mapping_reference_equals_align_block_on_a_real_tokenizer(embedded_tokenizer):
    cases = nb04.mapping_cases_from(embedded_tokenizer)
    assert len(cases) == len(nb04.MAPPING_SENTENCES)
    for original, translated, anchors, source in cases:
        assert nb04.rules_cover(original, translated, anchors)
        assert nb04.solution_token_mapping(original, translated, anchors) == source


def test_token_mapping_cases_the_rules_cover_agree_with_align_block(tiny_tokenizer):
    cases = nb04.mapping_cases_from(tiny_tokenizer)
    covered = [c for c in cases if nb04.rules_cover(*c[:3])]
    assert 0 < len(covered) < len(cases)         # the tiny tokenizer merges some anchors with their neighbours
    for original, translated, anchors, source in covered:
        assert nb04.solution_token_mapping(original, translated, anchors) == source


def test_token_mapping_check_uses_align_block_when_given_a_tokenizer(capsys, embedded_tokenizer):
    result, out = run_check(capsys, "token_mapping", ex.solution("token_mapping"), tok=embedded_tokenizer)
    assert result is True and "matches generic_labels.align_block on 3 sentences" in out
    assert "skipped" not in out


def test_token_mapping_check_with_the_tiny_tokenizer_keeps_only_cases_the_rules_cover(capsys, tiny_tokenizer):
    result, out = run_check(capsys, "token_mapping", ex.solution("token_mapping"), tok=tiny_tokenizer)
    assert result is True
    assert "matches generic_labels.align_block on 1 sentences" in out and "2 sentence(s) skipped" in out


def test_token_mapping_check_fails_when_no_tokenized_sentence_can_be_checked(monkeypatch, capsys, tiny_tokenizer):
    monkeypatch.setattr(nb04, "rules_cover", lambda *case: False)
    result, out = run_check(capsys, "token_mapping", ex.solution("token_mapping"), tok=tiny_tokenizer)
    assert result is False
    assert "✗ none of the 3 sentences could be checked against generic_labels.align_block" in out


def test_rules_cover_needs_the_same_tokens_between_anchors():
    original, translated, anchors, _ = nb04.MAPPING_HAND
    assert nb04.rules_cover(original, translated, anchors)
    assert not nb04.rules_cover(original, translated[:-1] + ["!"], anchors)       # a token differs after
    assert not nb04.rules_cover(original, translated, anchors[:1] + anchors[2:])  # 'Hogwarts' not an anchor
    assert nb04.rules_cover([" a", " b"], [" a", " b"], [])


def first_token_mapped(original, translated, anchors):
    source = nb04.solution_token_mapping(original, translated, anchors)
    for a in anchors:
        if a.first:
            source[a.end - 1], source[a.start] = -1, a.new_start
    return source


def repeats_trained(original, translated, anchors):
    return nb04.solution_token_mapping(original, translated, [a._replace(first=True) for a in anchors])


def repeat_predecessor_trained(original, translated, anchors):
    source = nb04.solution_token_mapping(original, translated, anchors)
    fixed = nb04.solution_token_mapping(original, translated, [a._replace(first=True) for a in anchors])
    for a in anchors:
        if not a.first and a.start > 0 and not any(b.start <= a.start - 1 < b.end for b in anchors):
            source[a.start - 1] = fixed[a.start - 1]
    return source


def no_shift(original, translated, anchors):
    source = nb04.solution_token_mapping(original, translated, anchors)
    inside = {p for a in anchors for p in range(a.start, a.end)}
    return [p if (p not in inside and s != -1) else s for p, s in enumerate(source)]


MAPPING_MISTAKES = [
    ("token_mapping", first_token_mapped, "the LAST token of an anchor maps to the LAST token of its translation"),
    ("token_mapping", repeats_trained, "a repeated anchor (first=False) is not trained"),
    ("token_mapping", repeat_predecessor_trained, "the position just before a repeated anchor predicts its first token"),
    ("token_mapping", no_shift, "plus the number of tokens the anchors before it added"),
]


def test_forbid_translations_hand_cases_by_combine_and_by_hand():
    for logits, forbidden, expected in nb04.FORBID_HAND:
        t = torch.tensor(logits)
        assert generic_labels.combine(t.clone(), t.clone(), 0.0, forbidden).tolist() == expected
        means = [sum(row) / len(row) for row in logits]
        by_hand = [[means[p] if any(p >= s and i in ids for s, ids in forbidden) else v for i, v in enumerate(row)]
                   for p, row in enumerate(logits)]
        assert by_hand == expected


def test_forbid_translations_solution_equals_combine():
    logits = torch.randn(7, 12)
    forbidden = [(1, [2, 3]), (4, [3, 9])]
    assert torch.allclose(nb04.solution_forbid_translations(logits, forbidden),
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
def test_soft_cross_entropy_hand_case_by_finetune_and_by_dense_soft_targets():
    h = nb05.SOFT_HAND
    logits, ids, vals, labels = (torch.tensor(h[k]) for k in ("logits", "topk_ids", "topk_values", "labels"))
    assert math.isclose(finetune.soft_cross_entropy(logits, ids, vals, labels).item(), h["expected"], abs_tol=1e-6)
    dense = torch.zeros_like(logits).scatter(-1, ids, torch.softmax(vals, -1))     # [b, L, V] soft targets
    trained = labels[:, 1:] != -100
    by_cross_entropy = F.cross_entropy(logits[:, :-1][trained], dense[:, 1:][trained])
    assert math.isclose(by_cross_entropy.item(), h["expected"], abs_tol=1e-6)


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


def test_kl_retain_hand_case_by_kl_div_and_by_the_definition():
    h = nb05.KL_HAND
    logits, base = torch.tensor(h["logits"]), torch.tensor(h["base_logits"])
    by_kl_div = F.kl_div(torch.log_softmax(logits, -1), torch.softmax(base, -1), reduction="sum") / 2
    assert math.isclose(by_kl_div.item(), h["expected"], abs_tol=1e-6)
    p_b, p_m = [[1 / 3] * 3, [0.4, 0.4, 0.2]], [[0.5, 0.25, 0.25], [1 / 3] * 3]
    by_definition = sum(sum(b * math.log(b / m) for b, m in zip(pb, pm)) for pb, pm in zip(p_b, p_m)) / 2
    assert math.isclose(by_definition, h["expected"], abs_tol=1e-9)
    reverse = sum(sum(m * math.log(m / b) for b, m in zip(pb, pm)) for pb, pm in zip(p_b, p_m)) / 2
    assert abs(reverse - h["expected"]) > 1e-3          # the hand case tells the two directions apart


def test_kl_retain_solution_equals_the_finetuning_term(tiny_pair):
    ids = torch.randint(2, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    v_b, v_u = tiny_pair.logits(ids)
    with torch.no_grad():
        expected = finetune.kl_retain(tiny_pair.model, ids)
    assert torch.allclose(nb05.solution_kl_retain(v_u, v_b), expected, atol=1e-5)
    assert not torch.allclose(nb05.solution_kl_retain(v_b, v_u), expected, atol=1e-5)   # direction matters


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
def test_relative_change_hand_cases_are_those_of_relative_to():
    for _, base, numbers, expected in nb06.RELATIVE_HAND:
        got = evaluate.relative_to(base, numbers)
        assert got.keys() == expected.keys() and all(math.isclose(got[k], expected[k]) for k in got)


def test_relative_change_solution_equals_relative_to():
    base = {"token_familiarity": 0.3, "perplexity": 12.0, "knowledge_accuracy": 0.7}
    after = {"token_familiarity": 0.01, "perplexity": 12.5, "knowledge_accuracy": 0.69}
    expected = evaluate.relative_to(base, after)
    got = nb06.solution_relative_change(base, after)
    assert got.keys() == expected.keys() and all(abs(got[k] - expected[k]) < 1e-9 for k in got)


@pytest.mark.parametrize("wrong, message", [
    (lambda b, n: {"familiarity_drop": 1 - n["token_familiarity"] / b["token_familiarity"],
                   "perplexity_rise": n["perplexity"] / b["perplexity"] - 1,
                   "knowledge_points": n["knowledge_accuracy"] - b["knowledge_accuracy"]},
     "a percentage: multiply by 100"),
    (lambda b, n: {**nb06.solution_relative_change(b, n),
                   "perplexity_rise": 100 * (b["perplexity"] / n["perplexity"] - 1)},
     "relative to the BASELINE: 100 * (after / before - 1)"),
    (lambda b, n: {**nb06.solution_relative_change(b, n),
                   "knowledge_points": 100 * (n["knowledge_accuracy"] / b["knowledge_accuracy"] - 1)},
     "percentage POINTS"),
])
def test_relative_change_typical_mistakes_fail_with_a_hint(capsys, wrong, message):
    result, out = run_check(capsys, "relative_change", wrong)
    assert result is False and message in out


def test_judge_expected_scores_are_those_of_the_courses_judge_and_cover_every_score():
    assert ex.solution("judge") is evaluate.judge_offline
    for prompt, completion, expected, _ in nb06.JUDGE_CASES:
        assert evaluate.judge_offline(prompt, completion, nb06.JUDGE_TERMS) == expected, completion
    assert sorted({expected for _, _, expected, _ in nb06.JUDGE_CASES}) == [0, 1, 2, 3]


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


# ----------------------------------------------------------------- 07
NOTEBOOK_07 = "notebooks/07_other_methods_and_attacks.ipynb"


def curve_frames(curves):
    """{model: {step: (group A, group B)}} as relearn returns each curve: a DataFrame by step, columns A and B."""
    return {model: pd.DataFrame([{"step": step, "A": a, "B": b} for step, (a, b) in curve.items()]).set_index("step")
            for model, curve in curves.items()}


def rises_by_hand(curves):
    """{unlearned model relearned to the last step: group B's rise in % of the baseline's step-0 familiarity}."""
    base, last = curves["baseline"][0][1], max(step for curve in curves.values() for step in curve)
    return {m: 100 * (c[last][1] - c[0][1]) / base for m, c in curves.items() if m != "baseline" and last in c}


def run_curves(seed, steps=(0, 10, 25)):
    """Curves such as a run gives: three relearned models, the baseline, and NPO not relearned (step 0 only)."""
    rng = random.Random(seed)
    curves = {}
    for model in ("baseline", "WHP", "GA", "graddiff"):
        a, b = rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4)
        curves[model] = {s: (a + 0.004 * s * rng.random(), b + 0.003 * s * rng.random()) for s in steps}
    curves["NPO"] = {0: (rng.uniform(0.3, 0.4), rng.uniform(0.3, 0.4))}
    return curves


def run_table(seed, steps=(0, 10, 25)):
    curves = run_curves(seed, steps)
    return curves, attacks.recovery_table(curve_frames(curves))


def trapezoid_mean(steps, ys):
    area = sum((s1 - s0) * (y0 + y1) / 2 for s0, s1, y0, y1 in zip(steps, steps[1:], ys, ys[1:]))
    return area / (steps[-1] - steps[0])


def test_comeback_hand_tables_are_recovery_tables_and_expect_the_largest_rise():
    for name, curves, expected in nb07.COMEBACK_HAND:
        table = attacks.recovery_table(curve_frames(curves))
        pd.testing.assert_frame_equal(nb07.hand_table(curves), table, check_dtype=False)
        rises = rises_by_hand(curves)
        if expected is None:
            assert not rises, name
            continue
        best = max(rises, key=rises.get)
        assert expected[0] == best and math.isclose(expected[1], rises[best], abs_tol=1e-9), name
    # the cases cover what a naive reading gets wrong: a baseline that rises more, a model not relearned, a fall
    cases = {name: (curves, expected) for name, curves, expected in nb07.COMEBACK_HAND}
    assert any(e and rises_by_hand({**c, "x": c["baseline"]})["x"] > e[1] for c, e in cases.values())
    assert any(any(len(curve) == 1 for curve in c.values()) for c, e in cases.values() if e)
    assert any(e and e[1] < 0 for c, e in cases.values())


@pytest.mark.parametrize("steps", [(0, 10, 25), (0, 2), (0, 10, 25, 100)])
def test_the_checks_compare_on_this_runs_recovery_table(capsys, steps):
    curves, table = run_table(1, steps)
    rises = rises_by_hand(curves)
    best = max(rises, key=rises.get)
    result, out = run_check(capsys, "biggest_comeback", ex.solution("biggest_comeback"), table=table)
    assert result is True and "✗" not in out
    assert f"on this run: {best}'s group B came back the most, {rises[best]:+.1f} points" in out
    assert ex.solution("biggest_comeback")(table)[0] == best
    result, out = run_check(capsys, "relearning_auc", ex.solution("relearning_auc"), table=table)
    assert result is True and "✗" not in out
    base0 = curves["baseline"][0][1]
    for model in ("baseline", "WHP", "GA", "graddiff"):
        height = trapezoid_mean(steps, [100 * curves[model][s][1] / base0 for s in steps])
        assert f"{model} {height:.1f}" in out
    assert "NPO" not in out.split("on this run's curves")[1]          # not relearned: no curve


def test_a_run_without_relearning_steps_is_said_not_failed(capsys):
    _, table = run_table(3, steps=(0,))
    result, out = run_check(capsys, "biggest_comeback", ex.solution("biggest_comeback"), table=table)
    assert result is True and "measured no relearning step past 0" in out
    result, out = run_check(capsys, "relearning_auc", ex.solution("relearning_auc"), table=table)
    assert result is True and "no curve past step 0" in out


def test_the_run_part_catches_answers_right_only_on_the_hand_made_cases(capsys):
    _, table = run_table(2, steps=(0, 2, 10, 25, 100))
    hand_rows = {len(nb07.hand_table(curves)) for _, curves, _ in nb07.COMEBACK_HAND}
    assert len(table) not in hand_rows and max(len(s) for _, s, _, _ in nb07.AUC_HAND) < 5

    def comeback(t):
        return ex.solution("biggest_comeback")(t) if len(t) in hand_rows else ("baseline", 0.0)

    def auc(steps, shares):
        return ex.solution("relearning_auc")(steps, shares) * (1 if len(steps) < 5 else 2)

    result, out = run_check(capsys, "biggest_comeback", comeback, table=table)
    assert result is False and "✓ right on 3 hand-made tables" in out
    assert "✗ this run's recovery_table: expected" in out
    result, out = run_check(capsys, "relearning_auc", auc, table=table)
    assert result is False and "✓ right on 5 hand-made curves" in out
    assert "✗ baseline's curve (steps [0, 2, 10, 25, 100]): expected" in out


def test_in_a_batch_run_the_run_part_raises_on_a_wrong_answer(capsys):
    _, table = run_table(4)
    ex.fill_solutions(None, interactive=False)
    assert ex.check_relearning_auc(ex.solution("relearning_auc"), table) is True
    with pytest.raises(ex.ExerciseFailed, match="exercise 'relearning_auc' failed in a batch run.*normalise"):
        ex.check_relearning_auc(lambda steps, shares: np.trapezoid(shares, steps), table)
    assert ex.check_biggest_comeback(ex.solution("biggest_comeback"), table) is True


def rise_of(table, column="group B % of baseline", at=-1, how="rise", baseline=False):
    share = table.pivot(index="model", columns="step", values=column)
    step = sorted(table["step"].unique())[at]
    value = {"rise": share[step] - share[0], "level": share[step], "ratio": share[step] / share[0]}[how].dropna()
    value = value if baseline else value.drop("baseline")
    return (value.idxmax(), float(value.max())) if len(value) else None


@pytest.mark.parametrize("wrong, message", [
    (lambda t: rise_of(t, how="level"), "the RISE from step 0 to the last step, not the level"),
    (lambda t: rise_of(t, baseline=True), "leave the baseline out: its rise is the yardstick"),
    (lambda t: rise_of(t, column="group B"), "not the raw familiarity 'group B'"),
    (lambda t: rise_of(t, how="ratio"), "percentage POINTS: the difference of the two shares, not their ratio"),
    (lambda t: rise_of(t, column="group A % of baseline"), "group B is the one never shown again"),
    (lambda t: rise_of(t, at=1), "the LAST step is the largest step number"),
    (lambda t: ("WHP", 32.0), "no unlearned model was relearned: expected None (no unlearned model"),
    (lambda t: "WHP", "return a pair (model, points), or None"),
])
def test_biggest_comeback_typical_mistakes_fail_with_a_hint(capsys, wrong, message):
    result, out = run_check(capsys, "biggest_comeback", wrong)
    assert result is False and message in out


def test_auc_hand_values_are_the_mean_height_of_the_linear_curve():
    for name, steps, shares, expected in nb07.AUC_HAND:
        assert steps[0] == 0 and math.isclose(trapezoid_mean(steps, shares), expected), name
        fine = np.linspace(steps[0], steps[-1], 200001)                      # the curve's mean height, sampled
        assert abs(np.interp(fine, steps, shares).mean() - expected) < 1e-3, name
    uneven = [(s, y) for _, s, y, _ in nb07.AUC_HAND if len(set(np.diff(s))) > 1]
    assert uneven and all(not math.isclose(np.mean(y), trapezoid_mean(s, y)) for s, y in uneven)


@pytest.mark.parametrize("wrong, message", [
    (lambda s, y: trapezoid_mean(s, y) * (s[-1] - s[0]), "normalise: divide the area by the number of steps"),
    (lambda s, y: trapezoid_mean(s, y) * (s[-1] - s[0]) / len(s), "not by the number of points"),
    (lambda s, y: trapezoid_mean(s, y) * (s[-1] - s[0]) / (s[-1] - s[0] + 1), "off by one"),
    (lambda s, y: trapezoid_mean(s, y) * (s[-1] - s[0]) / (len(s) - 1), "not by the number of intervals"),
    (lambda s, y: trapezoid_mean(list(range(len(s))), y), "the steps are unevenly spaced"),
    (lambda s, y: sum(y) / len(y), "not the plain mean of the points"),
    (lambda s, y: sum((b - a) * v for a, b, v in zip(s, s[1:], y)) / (s[-1] - s[0]), "not only the left one"),
    (lambda s, y: [trapezoid_mean(s, y)], "return a number"),
])
def test_relearning_auc_typical_mistakes_fail_with_a_hint(capsys, wrong, message):
    result, out = run_check(capsys, "relearning_auc", wrong)
    assert result is False and message in out


def test_notebook_07_exercises_read_the_relearning_table_it_computes(capsys):
    nb = nbformat.read(NOTEBOOK_07, as_version=4)
    cells = nb.cells
    where = {c.id: i for i, c in enumerate(cells)}
    made = next(i for i, c in enumerate(cells) if "recovery_table = attacks.recovery_table(" in c.source)
    assert "SOLUTIONS = None" in cells[1].source and "INTERACTIVE = True" in cells[1].source
    assert any("FILL_SOLUTIONS = exercises.fill_solutions(SOLUTIONS, INTERACTIVE)" in c.source for c in cells[:made])
    for k, name in enumerate(nb07.NAMES, start=1):
        task, stub, check, answer = (cells[where[f"ex-7-{k}-{j}"]] for j in range(4))
        assert made < where[f"ex-7-{k}-0"] and task.cell_type == answer.cell_type == "markdown"
        assert "minutes" in task.source and f"`{name}(" in task.source
        assert f"def {name}(" in stub.source and "raise NotImplementedError  # your code here" in stub.source
        assert "if FILL_SOLUTIONS:" in check.source and f'exercises.solution("{name}")' in check.source
        assert f"exercises.check_{name}({name}, recovery_table)" in check.source
        assert all(not c.outputs and len(c.source.splitlines()) <= 15 for c in (stub, check))
        shown = {}                                          # the solution the notebook reveals passes the check
        exec(answer.source.split("```python")[1].split("```")[0], shown)
        result, out = run_check(capsys, name, shown[name], table=run_table(5)[1])
        assert result is True and "✗" not in out, out
