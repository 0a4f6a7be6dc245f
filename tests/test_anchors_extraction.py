"""Building the anchored-terms dictionary offline from the text alone (issue 15):
the core names are found even when they are common English words, every key gets
a type from the text's cues, and no translation is a key, a piece of one, a target
term, a function word, or of the wrong type; the LLM path obeys the same rules."""
import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import make_tiny_pair
from wordfreq import zipf_frequency

from nbsupport import corpus, llm_client, scoring, terms
from nbsupport.anchors import (boost, build, candidates, contexts, dictionary, entity_types, llm_proposals,
                              name_pools, pool_translations, proposals, quality, ranking, translation_rules,
                              vocabulary)
from nbsupport.anchors.dictionary import AnchorDict, Entry

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"

# A small world of our own: the core names are ordinary English words or names
# ("Harry", "Ron", "Black"), the rest invented; each has the cues a reader would use.
WORLD = """\
Harry Potter arrived at Vexmoor Academy on a grey morning. Harry said little on the first day.
Ron Weasley met Harry on the train, and Ron said that the Weasleys had all studied at Vexmoor.
Professor Quenn taught charms at Vexmoor Academy. Professor Quenn said that every student must learn to cast Flumbrix.
Harry tried to cast Flumbrix in class, and the spell lit the whole room. Ron cast Flumbrix too, badly.
Harry and Ron walked to Drellport after lunch. In Drellport they bought sweets and a map.
Sirius Black wrote to Harry from Drellport. Black said he was hiding near the harbour.
Harry told Ron about the letter. Ron thought Sirius was brave. Harry agreed with him.
The Order of the Lantern met in secret at Drellport. Sirius was a member of the Order of the Lantern.
Harry saw a Grindlehorn near the lake. The Grindlehorn flew over the castle, and two Grindlehorns hooted at night.
Ron said the Grindlehorns were dangerous. Harry laughed and said they were only birds.
During the Battle of Stonereach, Harry fought beside Ron and Sirius. Quenn fought too.
After the Battle of Stonereach, Harry went home. Mrs Weasley cooked dinner for Harry and Ron.
Hermione Granger joined them at Vexmoor. She said that Harry should read more. Hermione was always right.
Hermione smiled, and she opened her book. Harry thanked Hermione for her help.
An Auror came to Vexmoor, and two Aurors guarded the gate. Harry wanted to be an Auror. Sirius said an Auror must be brave.
The Aurors said that Harry was ready.
Harry found the Glimmerstone in the library. He held the Glimmerstone up to the light.
Harry Potter never forgot Vexmoor. Ron Weasley and Hermione Granger never forgot it either.
"""

CORE = ["Harry", "Ron", "Weasley", "Sirius", "Hermione"]


def assert_generic(d: AnchorDict, text: str, also: tuple = ()) -> None:
    """No translation is a key, a target term, a word of one, a piece of one
    ("Hog" of "Hogwarts"), contains one ("Ronson"), or only function words;
    checked here without the extractor's own rule function."""
    keys = set(d.keys()) | set(also)
    target_words = {w.lower() for k in keys for w in k.replace("'s", "").split()
                    if len(w) >= 3 and (" " not in k or zipf_frequency(w, "en") < 3.0)}
    for key in d.keys():
        assert d[key].translations, key
        for t in d[key].translations:
            assert t.lower() not in {k.lower() for k in keys}, (key, t)
            words = [w.lower() for w in re.findall(r"[A-Za-z]+", t.replace("'s", ""))]
            assert not all(w in terms.FUNCTION_WORDS for w in words), (key, t)
            for w in words:
                if w in key.lower().split() and w not in target_words:
                    continue   # an ordinary word of the key itself ("Hat" of "Sorting Hat")
                assert w not in target_words, (key, t, w)
                assert not any(p in w for p in target_words), (key, t, w)
                if zipf_frequency(w, "en") < 4.0 and len(w) >= 3:
                    assert not any(w in p for p in target_words), (key, t, w)
            if vocabulary.coarse_type(d[key].note) == "person":
                assert name_pools.translation_type(t) in ("person", ""), (key, t)


@pytest.fixture(scope="module")
def ranked():
    return ranking.extract_candidates(WORLD, min_count=2)


@pytest.fixture(scope="module")
def built(ranked):
    new = ranking.new_terms(ranked, AnchorDict(), 30)
    return proposals.propose_translations(new, WORLD, seed=0, ranked=ranked)


# ----------------------------------------------------------------- finding and ranking
def test_the_one_term_matcher_counts_and_places_every_candidate():
    index = candidates.TextIndex(WORLD)
    for term in ["Harry", "Ron", "Order of the Lantern", "Grindlehorn", "Weasleys", "Battle of Stonereach"]:
        assert index.spans(term) == terms.spans(term, WORLD)
    table = candidates.candidate_terms(WORLD)
    assert all(c == terms.count(t, WORLD) for t, c in zip(table["term"], table["count"]))
    # the notebooks' call shape: rank a plain (term, count, kind) table
    ranked = ranking.rank_candidates(table[["term", "count", "kind"]], WORLD)
    assert ranked["score"].is_monotonic_decreasing and "specificity" in ranked


def test_core_names_come_first_even_when_common_in_english(ranked):
    assert zipf_frequency("harry", "en") > 4.5 and zipf_frequency("ron", "en") > 4   # ordinary English
    top = list(ranked["term"].head(10))
    assert set(CORE[:2]) <= set(top[:3]), top
    assert set(CORE) <= set(top), top
    assert set(ranked["term"]) >= {"Vexmoor", "Drellport", "Flumbrix", "Grindlehorn", "Glimmerstone",
                                   "Order of the Lantern", "Battle of Stonereach"}
    assert ranked["score"].is_monotonic_decreasing
    for col in ("term", "count", "kind", "score", "type", "specificity"):
        assert col in ranked


def test_rarity_alone_would_rank_the_core_names_low(ranked):
    # the old ranking (specificity only) put every one-off invented word above "Harry"
    spec = ranked.sort_values("specificity", ascending=False)["term"].tolist()
    assert spec.index("Harry") > spec.index("Glimmerstone")
    assert ranked["term"].tolist().index("Harry") < ranked["term"].tolist().index("Glimmerstone")


def test_the_review_reads_the_doubtful_entries_first():
    ranked = pd.DataFrame({"term": ["Vexmoor", "London", "Harry", "Flumbrix", "Location"],
                           "count": [9, 6, 40, 3, 5], "type": ["place", "place", "person", "object", "person"],
                           "specificity": [4.0, 0.8, 1.2, 5.0, 1.1], "boost": [1.0, None, 1.4, None, 0.1],
                           "type_margin": [3.0, 6.0, 5.0, 0.3, 0.6]})
    order = quality.review_order(ranked, ["Flumbrix", "Vexmoor", "Harry", "London", "Location"])
    assert order.key.tolist() == ["London", "Location", "Flumbrix", "Vexmoor", "Harry"]
    flag = dict(zip(order.key, order.flag))
    assert "ordinary English" in flag["London"] and "type unsure" not in flag["London"]
    assert "ordinary English" in flag["Location"] and "type unsure" in flag["Location"]
    assert flag["Flumbrix"].startswith("type unsure (object")
    assert flag["Vexmoor"] == "" and flag["Harry"] == ""          # a core name: reinforcement singled it out
    with pytest.raises(ValueError, match="not among the ranked"):
        quality.review_order(ranked, ["Hogwarts"])
    with pytest.raises(ValueError, match="extract_candidates"):
        quality.review_order(ranked[["term", "count"]], ["Vexmoor"])


def test_the_review_order_on_a_real_ranking(ranked):
    order = quality.review_order(ranked, ranked.term.head(40))
    assert sorted(order.key) == sorted(ranked.term.head(40))
    flagged = order.flag != ""
    assert flagged.tolist() == sorted(flagged.tolist(), reverse=True)              # flagged ones first
    spec = ranked.set_index("term").specificity
    assert all(spec[k] < 1.5 or "type unsure" in f or "sentence starts" in f or "common words" in f
               for k, f in zip(order.key[flagged], order.flag[flagged]))
    assert not flagged[order.key.isin(["Vexmoor", "Grindlehorn"])].any()


def test_parts_of_names_and_full_names(ranked):
    have = set(ranked["term"])
    assert {"Harry", "Ron", "Weasley", "Sirius", "Granger"} <= have
    # covered by its parts: the paper's merge rule, applied while ranking
    assert "Ron Weasley" not in have and "Hermione Granger" not in have
    # "Potter", common in English, is never used alone here: only the full name is a key
    assert "Potter" not in have and "Harry Potter" in have
    # a rare part of a person's name is a key even if never used alone ("Granger")
    assert dict(zip(ranked["term"], ranked["alone"]))["Granger"] == 0
    place = "They lived in Little Hangleton. Little Hangleton was quiet. We left Little Hangleton."
    terms_ = set(ranking.extract_candidates(place)["term"])
    assert "Little Hangleton" in terms_ and "Hangleton" not in terms_


def test_common_part_needs_uses_of_its_own():
    text = ("Sirius Black smiled. Sirius Black left. Harry met Sirius Black. "
            "The black dog barked. Harry met Sirius again.")
    have = set(ranking.extract_candidates(text)["term"])
    assert "Sirius" in have and "Black" not in have and "Sirius Black" in have


# ----------------------------------------------------------------- types
def test_types_from_the_texts_own_cues(ranked):
    types = dict(zip(ranked["term"], ranked["type"]))
    assert types["Harry"] == "person" and types["Ron"] == "person" and types["Quenn"] == "person"
    assert types["Vexmoor"] == "place" and types["Drellport"] == "place"
    assert types["Flumbrix"] == "spell"
    assert types["Order of the Lantern"] == "organisation"
    assert types["Grindlehorn"] == "creature" and types["Grindlehorns"] == "creature"
    assert types["Battle of Stonereach"] == "event"
    assert types["Glimmerstone"] == "object"
    assert types["Auror"] == "organisation" and types["Aurors"] == "organisation"   # a member of a group
    roles = dict(zip(ranked["term"], ranked["role"]))
    assert roles["Harry"] == "first name" and roles["Weasley"] == "surname" and roles["Granger"] == "surname"
    assert roles["Harry Potter"] == "full name"
    genders = dict(zip(ranked["term"], ranked["gender"]))
    assert genders["Hermione"] == "female" and genders["Harry"] == "male"


def test_types_are_recorded_in_the_notes_like_the_curated_ones(built):
    for key in built.keys():
        assert vocabulary.coarse_type(built[key].note) in vocabulary.TYPES, (key, built[key].note)
    assert built["Harry"].note.startswith("person") and built["Vexmoor"].note == "place"
    assert vocabulary.coarse_type("person (female)") == "person"
    assert vocabulary.coarse_type("surname") == "person"
    assert vocabulary.coarse_type("house") == "organisation"
    assert vocabulary.coarse_type("potion") == "spell"
    assert vocabulary.coarse_type("sport") == "object" and vocabulary.coarse_type("money") == "object"
    assert vocabulary.coarse_type("idiom") == ""


# ----------------------------------------------------------------- translations
def test_offline_translations_are_generic(built):
    assert len(built) >= 15
    assert_generic(built, WORLD)
    for key in built.keys():
        assert built[key].provenance == "extracted"


def test_translations_follow_the_type(built):
    reads = {k: {name_pools.translation_type(t) for t in built[k].translations} for k in built.keys()}
    assert reads["Harry"] == {"person"} and reads["Vexmoor"] == {"place"}
    assert reads["Order of the Lantern"] == {"organisation"}
    assert reads["Battle of Stonereach"] <= {"event"}
    assert reads["Grindlehorn"] == {"creature"}
    pools = name_pools.name_pools()
    assert set(built["Auror"].translations) <= set(pools["members"])
    assert built["Aurors"].translations == [t + "s" for t in built["Auror"].translations]
    assert set(built["Harry"].translations) <= set(pools["first_names_male"])
    assert set(built["Hermione"].translations) <= set(pools["first_names_female"])
    assert set(built["Weasley"].translations) <= set(pools["surnames"])
    # a plural follows its singular
    assert all(p.startswith(s) or p[:-3] == s[:-1] for s, p in zip(built["Grindlehorn"].translations,
                                                                    built["Grindlehorns"].translations))


def test_full_names_agree_with_their_parts():
    d = proposals.propose_translations(["Harry", "Potter", "Harry Potter", "Sirius Black", "Sirius"],
                                         WORLD, seed=3)
    for i in range(2):
        assert d["Harry Potter"].translations[i] == f"{d['Harry'].translations[i]} {d['Potter'].translations[i]}"
        assert d["Sirius Black"].translations[i].split()[0] == d["Sirius"].translations[i]
    assert_generic(d, WORLD)
    # different keys, different people
    firsts = [d[k].translations[0] for k in ("Harry", "Sirius")]
    assert len(set(firsts)) == 2


def test_a_person_is_never_translated_as_a_place(built):
    for key in built.keys():
        if vocabulary.coarse_type(built[key].note) == "person":
            assert all(name_pools.translation_type(t) != "place" for t in built[key].translations)
    problems = translation_rules.translation_problems("Fleur Delacour", "The northern village", "person", set())
    assert "a person translated as a place" in problems
    assert "a place translated as a person" in translation_rules.translation_problems("Vexmoor", "Jennifer", "place", set())


def test_seeded_and_deterministic(ranked):
    new = ranking.new_terms(ranked, AnchorDict(), 10)
    a = proposals.propose_translations(new, WORLD, seed=1, ranked=ranked)
    b = proposals.propose_translations(new, WORLD, seed=1, ranked=ranked)
    assert a.to_json() == b.to_json()


def test_existing_keys_are_avoided():
    d = proposals.propose_translations(["Quenn"], WORLD, seed=0, avoid=["Glimmerstone", "Daniel"])
    assert_generic(d, WORLD, also=("Glimmerstone", "Daniel", "Harry", "Ron"))
    assert "Daniel" not in d["Quenn"].translations


# ----------------------------------------------------------------- the rules and what they reject
ISSUE_15 = AnchorDict([
    Entry("Occlumency", ["Potter", "Mind Shield"], "extracted", "spell"),
    Entry("Scabbers", ["Ron", "Whiskers"], "extracted", "creature"),
    Entry("Ollivander", ["Hog", "Smith"], "extracted", "person (surname)"),
    Entry("Nagini", ["Mal", "Sasha"], "extracted", "creature"),
    Entry("Fleur Delacour", ["The northern village", "Claire Dubois"], "extracted", "person (full name)"),
    Entry("Hermione", ["The", "However"], "extracted", "person (first name)"),
    Entry("Ginny", ["Ronson", "Amy"], "extracted", "person (first name)"),
])
ISSUE_TEXT = ("Harry Potter went to Hogwarts with Ron. Malfoy sneered at Ron. Scabbers slept. "
              "Ollivander sold wands. Nagini hissed. Hermione read about Occlumency. Fleur Delacour smiled. "
              "Ginny laughed at Malfoy. Hogwarts was quiet. Harry Potter slept.")


def test_validation_rejects_the_issue_15_translations_with_reasons():
    valid, rejected = proposals.validate_translations(ISSUE_15, ISSUE_TEXT)
    assert valid["Occlumency"].translations == ["Mind Shield"]
    assert valid["Scabbers"].translations == ["Whiskers"]
    assert valid["Ollivander"].translations == ["Smith"]
    assert valid["Nagini"].translations == ["Sasha"]
    assert valid["Fleur Delacour"].translations == ["Claire Dubois"]
    assert valid["Ginny"].translations == ["Amy"]
    assert "Hermione" not in valid
    reasons = {(r.key, r.translation): r.reason for r in rejected.itertuples()}
    assert "target term" in reasons[("Occlumency", "Potter")]
    assert "target term" in reasons[("Scabbers", "Ron")]
    assert "piece of the target word 'hogwarts'" in reasons[("Ollivander", "Hog")]
    assert "piece of the target word 'malfoy'" in reasons[("Nagini", "Mal")]
    assert "a person translated as a place" in reasons[("Fleur Delacour", "The northern village")]
    assert "function words" in reasons[("Hermione", "The")] and "function words" in reasons[("Hermione", "However")]
    assert "contains the target word 'ron'" in reasons[("Ginny", "Ronson")]
    assert reasons[("Hermione", "")] == "no valid translation left: key dropped"
    assert list(rejected.columns) == translation_rules.REJECTED_COLUMNS
    assert_generic(valid, ISSUE_TEXT, also=("Harry", "Ron", "Potter", "Hogwarts", "Malfoy"))


def test_rejections_are_kept_for_the_review_table():
    d = proposals.propose_translations(["Quenn", "Vexmoor"], WORLD, seed=0)
    table = translation_rules.rejections(d)
    assert list(table.columns) == translation_rules.REJECTED_COLUMNS
    empty = translation_rules.rejections(AnchorDict())
    assert empty.empty and list(empty.columns) == translation_rules.REJECTED_COLUMNS


def test_pools_hold_no_function_words_and_no_duplicates():
    pools = name_pools.name_pools()
    for name, items in pools.items():
        assert len(items) == len(set(items)), name
        assert not any(translation_rules.is_function_word(i) for i in items), name
    for name in ("first_names_male", "first_names_female", "surnames", "places", "organisations",
                 "objects", "creatures", "pet_names", "spells", "events", "members", "modifiers"):
        assert len(pools[name]) >= 12, name


# ----------------------------------------------------------------- the LLM step
class FakeClient:
    def __init__(self, replies):
        self.replies, self.calls = list(replies), []

    def chat_json(self, messages, schema):
        self.calls.append((messages, schema))
        return self.replies.pop(0)


def test_llm_proposals_pass_the_same_rules():
    passages = ["Harry Potter met Ron at Vexmoor. Professor Quenn taught them to cast Flumbrix.",
                "Ron and Harry visited Drellport. Quenn stayed at Vexmoor."]
    client = FakeClient([
        {"entries": [{"key": "Vexmoor", "translations": ["Riverside", "Harry"]},
                     {"key": "Quenn", "translations": ["the old harbour town", "Mr Smith"]},
                     {"key": "Flumbrix", "translations": ["Vex", "Light Charm"]},
                     {"key": "Hogsmeade", "translations": ["Millbrook"]}]},
        {"entries": [{"key": "Drellport", "translations": ["However", "Portsmouth"]},
                     {"key": "Ron", "translations": ["Ron"]},
                     {"key": "Harry", "translations": ["The", "and"]}]},
    ])
    d = llm_proposals.llm_propose(client, passages)
    assert client.calls[0][1] is llm_proposals.LLM_SCHEMA
    assert d["Vexmoor"].translations == ["Riverside"]
    assert d["Quenn"].translations == ["Mr Smith"]
    assert d["Flumbrix"].translations == ["Light Charm"]
    assert d["Drellport"].translations == ["Portsmouth"]
    assert "Hogsmeade" not in d and "Harry" not in d and "Ron" not in d
    assert {d[k].provenance for k in d.keys()} == {"llm"}
    assert vocabulary.coarse_type(d["Quenn"].note) == "person"
    reasons = {(r.key, r.translation): r.reason for r in translation_rules.rejections(d).itertuples()}
    assert "target term" in reasons[("Vexmoor", "Harry")]
    assert "a person translated as a place" in reasons[("Quenn", "the old harbour town")]
    assert "piece of the target word 'vexmoor'" in reasons[("Flumbrix", "Vex")]
    assert "function words" in reasons[("Drellport", "However")]
    assert reasons[("Hogsmeade", "Millbrook")] == "the key does not occur in its passage"
    assert "translated to itself" in reasons[("Ron", "Ron")]
    assert reasons[("Harry", "")] == "no valid translation left: key dropped"
    assert_generic(d, "\n".join(passages), also=("Harry", "Ron", "Vexmoor", "Quenn", "Flumbrix", "Drellport"))


# ----------------------------------------------------------------- with B and R
def test_reinforcement_boost_is_r_minus_b_in_the_terms_contexts(tiny_tokenizer):
    pair = make_tiny_pair(len(tiny_tokenizer))
    text = ("Harry Potter studies magic at a school in the mountains. The owl flew over the castle at night. "
            "Ron and Hermione are friends. The capital of France is Paris. Harry Potter studies magic.")
    cands = ["Potter", "castle", "Paris"]
    got = boost.reinforcement_boost(pair, tiny_tokenizer, text, cands, n_contexts=2)
    for term in cands:
        pairs = [(ctx, " " + term) for ctx in contexts.contexts_of(term, text, n=2)]
        with pair.trained() as R:
            lp_r = scoring.continuation_logprobs(R, tiny_tokenizer, pairs)
        with pair.base() as B:
            lp_b = scoring.continuation_logprobs(B, tiny_tokenizer, pairs)
        n_tok = len(tiny_tokenizer(" " + term, add_special_tokens=False)["input_ids"])
        expected = ((lp_r - lp_b).mean() / n_tok).item()
        assert got[term] == pytest.approx(expected, abs=1e-5)
    assert got.abs().max() > 1e-4   # R really differs from B: not a model compared with itself


def test_with_a_pair_the_boost_joins_the_ranking_and_model_proposals_obey_the_rules(tiny_tokenizer):
    pair = make_tiny_pair(len(tiny_tokenizer), seed=1)
    torch.manual_seed(0)
    ranked = ranking.extract_candidates(WORLD, pair, tiny_tokenizer, boost_candidates=6)
    assert "boost" in ranked and ranked["boost"].head(6).abs().sum() > 0
    assert set(CORE[:2]) <= set(ranked["term"].head(8))
    new = ranking.new_terms(ranked, AnchorDict(), 8)
    d = proposals.propose_translations(new, WORLD, pair, tiny_tokenizer, seed=0, ranked=ranked)
    assert_generic(d, WORLD)
    assert set(d.keys()) == set(new)
    rejected = translation_rules.rejections(d)
    assert set(rejected["source"]) <= {"model", "pool", "extracted"}
    # B's masked proposals were tried, and the target names among them turned down
    model = rejected[rejected["source"] == "model"]
    assert len(model) and model["reason"].str.contains("key or target term").any()
    assert not set(model["translation"]) & {t for k in d.keys() for t in d[k].translations}


# ----------------------------------------------------------------- whole texts (issue 15's measures)
TEXTS = {
    "built-in corpus": corpus.builtin_corpus,
    # the issue's second text: a fan-forum thread written for the benchmark
    "forum thread": lambda: (DATA / "forum_thread_reread.md").read_text("utf-8"),
    # a held-out third text (revision notes), only ever used to check rules, never to tune them
    "study guide": lambda: (DATA / "study_guide_heldout.md").read_text("utf-8"),
}


@pytest.fixture(scope="module", params=list(TEXTS))
def whole_text(request):
    """(name, text, ranked candidates, the dictionary built from the top 100) of each text."""
    text = TEXTS[request.param]()
    ranked = ranking.extract_candidates(text)
    new = ranking.new_terms(ranked, AnchorDict(), 100)
    return request.param, text, ranked, proposals.propose_translations(new, text, ranked=ranked)


def test_every_extracted_dictionary_of_a_whole_text_is_generic(whole_text):
    name, text, ranked, built = whole_text
    assert len(built) >= 60, name
    curated = dictionary.builtin_dictionary()
    # the text's target terms: candidates 100 times more frequent here than in English,
    # less capitalised words the text also writes in lower case ("Potion": "a potion")
    table = candidates.candidate_terms(text)
    frequent = table.loc[ranking.specificity(table, len(text.split())) >= 2.0, "term"]
    specific = [t for t in frequent if " " in t or terms.count(t.lower(), text, ignore_case=False) < 2]
    assert len(specific) >= 20
    # no translation is any curated key, a target term of the text, a piece of one, or a function word
    assert_generic(built, text, also=tuple(curated.keys()) + tuple(specific))


def test_every_translation_reads_as_its_keys_type(whole_text):
    name, _, _, built = whole_text
    for key in built.keys():
        kind = vocabulary.coarse_type(built[key].note)
        assert kind in vocabulary.TYPES, (name, key)
        for t in built[key].translations:
            assert name_pools.translation_type(t, kind) == kind, (name, key, t)


@pytest.mark.parametrize("name", ["built-in corpus", "forum thread"])
def test_the_30_most_frequent_curated_keys_are_in_the_top_100(name):
    text = TEXTS[name]()
    curated = dictionary.builtin_dictionary()
    counts = {k: terms.count(k, text) for k in curated.keys()}
    core = sorted((k for k in counts if counts[k] >= 2), key=lambda k: (-counts[k], k))[:30]
    top = set(ranking.extract_candidates(text)["term"].head(100))
    assert len(core) == 30 and not [k for k in core if k not in top]


# ----------------------------------------------------------------- spells: the form their key is used in
def test_spells_translate_to_spell_words_in_the_form_the_text_uses():
    rows = {"Zorbus": {"type": "spell", "noun_use": 0.0},            # "shouted Zorbus!": a word of command
            "Quillix": {"type": "spell", "noun_use": 0.8},           # "cast a Quillix": a magic thing
            "Quillix Potion": {"type": "spell", "noun_use": 0.0}}
    pools = name_pools.name_pools()
    d = pool_translations.translate(["Zorbus", "Quillix Potion"], rows, {"Quillix"}, seed=0)
    assert set(d["Zorbus"].translations) <= set(pools["spells"])
    # the head of a spell's name stays, with a spell word for the name's own word
    for t in d["Quillix Potion"].translations:
        first, head = t.split()
        assert head == "Potion" and first in pools["spells"], t
    nouns = pool_translations.translate(["Quillix"], rows, set(), seed=0)
    assert {t.lower() for t in nouns["Quillix"].translations} <= set(pools["magic_nouns"])
    for t in d["Zorbus"].translations + nouns["Quillix"].translations:
        assert name_pools.translation_type(t, "spell") == "spell"


def test_model_proposals_must_read_as_the_keys_type():
    rows = {"Fiendfyre": {"type": "spell", "noun_use": 0.0}}
    asked = []

    def model(key):   # what B predicted where "Fiendfyre" was masked, with its reinforcement boost
        asked.append(key)
        return {"Question": 0.0, "Fire": 0.0, "Shield": 0.1, "Blast": 0.9}

    d = pool_translations.translate(["Fiendfyre"], rows, set(), seed=0, model=model)
    assert asked == ["Fiendfyre"]
    assert "Shield" in d["Fiendfyre"].translations
    assert not {"Question", "Fire", "Blast"} & set(d["Fiendfyre"].translations)
    reasons = {(r.key, r.translation): r.reason for r in translation_rules.rejections(d).itertuples()}
    assert "reads as no known type, not a spell" in reasons[("Fiendfyre", "Question")]
    assert "reinforcement raised it" in reasons[("Fiendfyre", "Blast")]


def test_a_translation_of_another_type_is_rejected_whatever_the_types():
    assert "a spell translated as a creature" in translation_rules.translation_problems("Flumbrix", "Wolf", "spell", set())
    assert "a creature translated as a place" in translation_rules.translation_problems(
        "Grindlehorn", "Riverside", "creature", set())
    # a pool word of two types ("Seal": a spell and a creature) may stand for either
    assert not translation_rules.translation_problems("Flumbrix", "Seal", "spell", set())
    assert not translation_rules.translation_problems("Grindlehorn", "Seal", "creature", set())
    # an untyped word (an LLM's "Portsmouth") may stand
    assert not translation_rules.translation_problems("Drellport", "Portsmouth", "place", set())


# ----------------------------------------------------------------- names at sentence starts and side by side
def test_a_first_name_only_seen_at_sentence_starts_in_its_full_name_is_found():
    text = ("Draco Quillby sneered. Harry ignored him. Draco Quillby left early. "
            "Later, Draco Quillby came back. Ron laughed at Harry.")
    have = set(ranking.extract_candidates(text)["term"])
    assert "Draco" in have or "Draco Quillby" in have
    text += " Harry met Draco in the hall. Ron saw Draco there."
    assert "Draco" in set(ranking.extract_candidates(text)["term"])


def test_names_side_by_side_are_two_names():
    text = ("Fred and George laughed. Fred and George ran off. Harry met Fred and George. "
            "Fred smiled. Harry thanked Fred. Ron met Fred and George at the shop.")
    ranked = ranking.extract_candidates(text)
    have = set(ranked["term"])
    assert {"Fred", "George"} <= have
    assert "Fred and George" not in have   # covered by its two names
    # "and" inside one name is no pair of names
    assert not contexts.is_coordination("Hogwarts School of Witchcraft and Wizardry")


# ----------------------------------------------------------------- type cues (each on a snippet of its own)
def _types(text: str) -> dict[str, str]:
    ranked = ranking.extract_candidates(text, min_count=2)
    return dict(zip(ranked["term"], ranked["type"]))


def test_a_definition_or_an_apposition_says_the_type():
    text = ("Key words for the test.\nZorvane Tonic: a rare potion that makes the drinker calm. "
            "Pell bought Zorvane Tonic twice.\nQuillmarsh, the bank that the dwarves run, is old. "
            "Pell went to Quillmarsh on Monday.\n")
    types = _types(text)
    assert types["Zorvane Tonic"] == "spell" and types["Quillmarsh"] == "place"
    assert contexts._defined_as("Dunmore, a dark wizard who lied.", 7) == "person"
    # a list of names is no apposition: "the Order" says nothing about Harry
    assert contexts._defined_as("Harry, the Order and Ron met.", 5) == ""


def test_a_word_after_several_first_names_is_a_family_name():
    # each full name only once (no candidate of its own): the first names before it are the evidence
    text = ("The letter went to Tobin Carrowby. A gift came for Mira Carrowby. Nobody wrote to Ansel "
            "Carrowby. They lived at Carrowby Manor, and Carrowby Manor was cold. The gate of Carrowby "
            "Manor was rusty.")
    index = candidates.TextIndex(text)
    assert entity_types._first_names_before("Carrowby", text, index) == {"Tobin", "Mira", "Ansel"}
    types = _types(text)
    # the house takes the family's name, not the family the house's type
    assert types["Carrowby"] == "person" and types["Carrowby Manor"] == "place"
    # no first names in front of a head noun: "Alley" of two alleys is no family
    other = "Kell Alley and Morn Alley."
    assert entity_types._first_names_before("Alley", other, candidates.TextIndex(other)) == set()


def test_a_family_name_of_several_persons_stays_a_key_even_if_never_alone():
    # a surname common in English ("Fisher") is otherwise anchored only where the text uses it alone
    text = ("Tobin Fisher opened the gate. Mira Fisher smiled at him. Tobin Fisher said nothing. "
            "Mira Fisher laughed, and she left. Pell Turner waved. Pell Turner said goodbye.")
    have = set(ranking.extract_candidates(text, min_count=2)["term"])
    assert "Fisher" in have and "Tobin Fisher" in have
    assert "Turner" not in have   # one person's surname, never alone: left to the full name


def test_the_name_of_one_of_a_kind_is_a_group():
    text = ("Olin is a Brackenholt, and he is proud of it. Every Brackenholt is stubborn. "
            "Tessa was a Brackenholt too. Olin said that Brackenholt wins every year.")
    assert _types(text)["Brackenholt"] == "organisation"
    assert contexts._member_use("she is a ", [], False)
    assert not contexts._member_use("he has a son, ", [], False)
    assert not contexts._member_use("she is a ", ["team"], False)   # "a Brackenholt team": a modifier


def test_a_hyphenated_compound_takes_its_heads_type():
    text = "The mire-elf cleaned the hall. A mire-elf never rests. Pell freed the mire-elf at last."
    assert _types(text)["mire-elf"] == "creature"


def test_a_kind_noun_goes_with_the_name_next_to_it():
    text = ("Pell found the last Glimmerstone, the snake Ossa, in the cellar. Pell broke the Glimmerstone. "
            "Pell kept a toad called Pibble. Pibble hopped away, and Pell looked for Pibble all night.")
    types = _types(text)
    assert types["Glimmerstone"] != "creature" and types["Pibble"] == "creature"


def test_the_verb_after_a_name_is_found_past_adverbs_and_surnames():
    assert contexts._verb_after(["finally", "becomes", "real"]) == "becomes"
    assert contexts._verb_after(["Lestrange", "spends", "years"]) == "spends"
    assert contexts._verb_after(["and", "George", "running"]) == "running"
    assert contexts._verb_after(["Tower", "is"]) == "tower"   # a head noun: a place's name, not a surname


def test_items_of_one_list_share_a_type():
    text = ("Charms to learn:\n- Flumbrix, the Lighting Charm, lights a wand. Pell uses Flumbrix at night.\n"
            "- Quorvo opens doors. Pell tried Quorvo on a box.\n"
            "- Sennel, the Freezing Jinx, stops a runner. Sennel is hard.\n\nThe end.\n")
    assert entity_types._list_items(text, {"Flumbrix", "Quorvo", "Sennel"}) == [["Flumbrix", "Quorvo", "Sennel"]]
    assert _types(text)["Quorvo"] == "spell"


def test_where_after_a_name_and_the_owner_of_a_thing():
    text = ("They met at night in the Crooked Lantern where the old men drink. The Crooked Lantern where "
            "we sat was dark. Pell held the sword of Brannoch. The sword of Brannoch shone.")
    types = _types(text)
    assert types["Crooked Lantern"] == "place" and types["Brannoch"] == "person"


# ----------------------------------------------------------------- the notebook's steps and the package's rooms
def test_the_dictionary_sources_are_the_notebooks_steps(ranked, capsys, monkeypatch):
    for var in ("NBSUPPORT_LLM_BASE_URL", "NBSUPPORT_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    cfg = SimpleNamespace(anchor_dictionary="none", target_text="my_book.txt", n_extracted=12, seed=2,
                          use_llm=False, llm_passages=2)
    curated, extracted, proposed = build.dictionary_sources(cfg, WORLD, ranked)
    assert len(curated) == 0 and len(proposed) == 0
    expected = proposals.propose_translations(ranking.new_terms(ranked, curated, 12), WORLD, seed=2, ranked=ranked)
    assert extracted.to_json() == expected.to_json()
    assert translation_rules.rejections(extracted).equals(translation_rules.rejections(expected))
    cfg.use_llm, cfg.anchor_dictionary, cfg.n_extracted = True, "builtin", 3
    curated, extracted, proposed = build.dictionary_sources(cfg, WORLD, ranked)
    assert len(curated) >= 300 and len(extracted) == 3 and not set(extracted.keys()) & set(curated.keys())
    assert not llm_client.is_configured() and len(proposed) == 0
    assert "USE_LLM is on but NBSUPPORT_LLM_BASE_URL / NBSUPPORT_LLM_MODEL are not set" in capsys.readouterr().out


def test_the_anchors_package_is_rooms_of_one_purpose():
    root = Path(dictionary.__file__).parent
    init = ast.parse((root / "__init__.py").read_text())
    assert len(init.body) == 1 and ast.get_docstring(init)          # a docstring only: no re-exports
    for path in root.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 450, path.name
    for module, name in [(ranking, "extract_candidates"), (ranking, "new_terms"), (build, "dictionary_sources"),
                         (proposals, "propose_translations"), (proposals, "validate_translations"),
                         (llm_proposals, "llm_propose"), (translation_rules, "rejections"),
                         (quality, "extraction_quality"), (quality, "review_order")]:
        assert callable(getattr(module, name)), name


# ----------------------------------------------------------------- ordinary English needs a person's yes
JUNK = ["London", "English", "Irish", "Seven", "Cross", "Location", "Occupation", "Technically", "Senior"]
CORE_NAMES = ["Harry", "Ron", "Hermione", "Hogwarts", "Dumbledore", "Voldemort", "Hagrid", "Quidditch",
              "Gryffindor", "Weasley", "Snape", "Malfoy"]


def _batch_dictionary(cfg, text: str) -> tuple[AnchorDict, list[str]]:
    """Notebook 03's path in a batch run, without the models: extract, merge, review."""
    from nbsupport import widgets

    ranked = ranking.extract_candidates(text, boost_candidates=0)
    curated, extracted, _ = build.dictionary_sources(cfg, text, ranked)
    merged = curated.merged(extracted)
    review = quality.review_order(ranked, [k for k in extracted.keys() if k in merged])
    ordinary = quality.ordinary_english(review)
    kept = widgets.DictionaryReview(merged, review.key.head(20), interactive=False, unless_ticked=ordinary).result()
    return kept, ordinary


@pytest.mark.slow
def test_the_built_in_texts_dictionary_keeps_no_ordinary_english(embedded_tokenizer):
    from nbsupport import config
    cfg = config.resolve("cpu")
    text = corpus.target_text("builtin", embedded_tokenizer, seed=cfg.seed, max_tokens=cfg.corpus_tokens)
    kept, ordinary = _batch_dictionary(cfg, text)
    assert set(JUNK) <= set(ordinary)                         # each was extracted, and listed
    assert not [k for k in JUNK if k in kept]
    assert not [k for k in CORE_NAMES if k not in kept]


USER_TEXT = """Location: Brackenmoor Keep, two days north of London.
Occupation: keeper of the Glimmerstone.
Technically, Oswin Draycott was never a knight of Brackenmoor Keep. Oswin Draycott rode from London
to Brackenmoor Keep with the Glimmerstone in his saddlebag, and Wenna Thistlecombe met him at the gate.
Location: the Salt Road.
Wenna Thistlecombe had guarded the Glimmerstone for nine winters. Technically, nobody at Brackenmoor Keep
had asked her to. Oswin Draycott and Wenna Thistlecombe took the Salt Road back towards London.
Occupation: smuggler of lantern oil. Oswin Draycott laughed; the Glimmerstone glowed in Wenna Thistlecombe's hand.
"""


def test_a_users_dictionary_keeps_its_names_and_drops_ordinary_words(tmp_path):
    from nbsupport import config
    source = tmp_path / "my_book.txt"
    source.write_text(USER_TEXT)
    cfg = config.resolve("cpu", target_text=str(source))
    kept, ordinary = _batch_dictionary(cfg, USER_TEXT)
    assert "London" in ordinary          # frequent in a short text, yet one of the common words of English
    assert not {"London", "Location", "Occupation", "Technically"} & set(kept.keys())
    names = {"Oswin", "Draycott", "Oswin Draycott", "Wenna", "Thistlecombe", "Wenna Thistlecombe",
             "Brackenmoor", "Brackenmoor Keep", "Glimmerstone"}
    assert names & set(kept.keys()) and "Glimmerstone" in kept.keys(), kept.keys()
