"""The anchored-terms dictionary (docs/ALGORITHM.md section 3): translation edge cases,
the merge rules, file formats and every malformed file a user may bring."""
import json

import pandas as pd
import pytest

from fake_llm import answer
from nbsupport.anchors import comparison, dictionary, llm_proposals
from nbsupport.anchors.dictionary import AnchorDict, AnchorError, Entry


def small():
    return AnchorDict([Entry("Harry Potter", ["Jon Smith"]), Entry("Harry", ["Jon", "Nick"]),
                       Entry("Ron", ["Tom"]), Entry("Hogwarts", ["Mystic Academy"]),
                       Entry("house-elf", ["magic servant"]), Entry("Quidditch", ["Skyball"])])


# ----------------------------------------------------------------- translation edge cases
def test_longest_match_wins_over_a_shorter_key():
    t = dictionary.translate("Harry Potter met Harry.", small(), seed=0)
    assert [a.key for a in t.anchors] == ["Harry Potter", "Harry"]
    assert t.text.startswith("Jon Smith met ")


def test_possessive_keeps_its_s_and_word_boundaries_hold():
    t = dictionary.translate("Ron's owl. Ronald and iron and Ron.", small(), seed=0)
    assert t.text == "Tom's owl. Ronald and iron and Tom."
    assert [(a.start, a.end) for a in t.anchors] == [(0, 3), (31, 34)]


def test_term_at_the_start_and_after_a_newline():
    t = dictionary.translate("Hogwarts\nHogwarts, and\nQuidditch", small(), seed=0)
    assert t.text == "Mystic Academy\nMystic Academy, and\nSkyball"
    assert [a.first for a in t.anchors] == [True, False, True]


def test_lower_case_key_matches_capitalised_and_keeps_the_capital():
    t = dictionary.translate("House-elf cooks. A house-elf cleans.", small(), seed=0)
    assert t.text == "Magic servant cooks. A magic servant cleans."
    assert {a.key for a in t.anchors} == {"house-elf"}


def test_key_inside_another_word_is_left_alone():
    d = AnchorDict([Entry("Ron", ["Tom"]), Entry("Pot", ["Jar"])])
    t = dictionary.translate("Byron and Potter and Pot-luck.", d)
    assert t.text == "Byron and Potter and Jar-luck."


def test_one_translation_per_key_per_block_and_seeded():
    d = AnchorDict([Entry("Harry", ["Jon", "Nick", "Paul", "Sam"])])
    text = "Harry and Harry and Harry."
    texts = {dictionary.translate(text, d, seed=s).text for s in range(12)}
    assert all(len(set(t.replace(".", "").split(" and "))) == 1 for t in texts)
    assert len(texts) > 1  # different seeds pick different names
    assert dictionary.translate(text, d, seed=3).text == dictionary.translate(text, d, seed=3).text


def test_spans_map_original_to_translated_text():
    t = dictionary.translate("Then Harry Potter and Ron went to Hogwarts.", small(), seed=1)
    for a in t.anchors:
        assert t.original[a.start:a.end] in (a.key, a.key[0].upper() + a.key[1:])
        assert t.text[a.new_start:a.new_end] == a.translation
    # text between anchors is unchanged
    assert t.text.endswith(" went to Mystic Academy.")


# ----------------------------------------------------------------- dictionary rules and I/O
@pytest.mark.parametrize("entry, message", [
    (Entry("Harry", []), "no translation"),
    (Entry("Harry", [""]), "empty translation"),
    (Entry("Harry", ["harry"]), "translated to itself"),
    (Entry("", ["x"]), "empty key"),
    (Entry("Harry", ["Jon"], provenance="guess"), "provenance"),
])
def test_invalid_entries_name_the_key(entry, message):
    with pytest.raises(AnchorError, match=message):
        AnchorDict([entry])


def test_shadowing_keys_are_refused():
    with pytest.raises(AnchorError, match="differ only in case"):
        AnchorDict.from_json('{"entries": [{"key": "Floo", "translations": ["x"]},'
                             ' {"key": "floo", "translations": ["y"]}]}')
    with pytest.raises(AnchorError, match="contains the key 'Ron'"):
        AnchorDict.from_json('{"entries": [{"key": "Ron", "translations": ["Tom"]},'
                             ' {"key": "Harry", "translations": ["Ron"]}]}')


def test_merge_rules():
    a = AnchorDict([Entry("Ron", ["Tom"]), Entry("Weasley", ["Wilson"]), Entry("Hogwarts", ["Academy"])])
    b = AnchorDict([Entry("Ron's", ["Tom's"], "llm"), Entry("Ron Weasley", ["Tom Wilson"], "llm"),
                    Entry("Ron Smith", ["Tom Jones"], "llm"), Entry("Hogwarts", ["Stone School"], "llm")])
    m = a.merged(b)
    assert "Ron's" not in m and "Ron Weasley" not in m  # the paper's two rules
    assert "Ron Smith" in m  # "Smith" is no key
    assert m["Hogwarts"].translations == ["Academy", "Stone School"]


def test_json_and_csv_round_trip(tmp_path):
    d = small()
    d.save(tmp_path / "d.json")
    d.save(tmp_path / "d.csv")
    for path in ("d.json", "d.csv"):
        back = AnchorDict.load(tmp_path / path)
        assert back.keys() == d.keys()
        assert [e.translations for e in back.entries.values()] == [e.translations for e in d.entries.values()]


def test_csv_errors_name_the_line(tmp_path):
    (tmp_path / "bad.csv").write_text("key,translations,provenance,note\nHarry,Jon | Nick,curated,\nRon,,curated,\n")
    with pytest.raises(AnchorError, match="line 3.*'Ron'"):
        AnchorDict.load(tmp_path / "bad.csv")
    (tmp_path / "nohead.csv").write_text("Harry,Jon\n")
    with pytest.raises(AnchorError, match="header"):
        AnchorDict.load(tmp_path / "nohead.csv")
    with pytest.raises(AnchorError, match="not found"):
        AnchorDict.load(tmp_path / "missing.json")


def test_builtin_dictionary_is_large_and_follows_the_rules():
    d = dictionary.builtin_dictionary()
    assert len(d) >= 300
    assert all(e.provenance == "curated" for e in d.entries.values())
    assert dictionary.apply_merge_rules(dictionary.builtin_dictionary()).keys() == d.keys()
    for key in ("Hogwarts", "Quidditch", "Slytherin", "Hermione", "Dumbledore"):
        assert key in d


def test_review_accepts_rejects_and_edits():
    d = small()
    out = dictionary.apply_review(d, {"Ron": {"accept": False}, "Harry": {"accept": True, "translations": "Paul | Sam"}})
    assert "Ron" not in out and out["Harry"].translations == ["Paul", "Sam"]
    assert "Ron" in d  # the input is not modified
    with pytest.raises(AnchorError, match="empty translation"):
        dictionary.apply_review(d, {"Harry": {"accept": True, "translations": " | "}})
    with pytest.raises(AnchorError, match="unknown key"):
        dictionary.apply_review(d, {"Draco": {"accept": False}})


def test_merge_leaves_out_entries_that_would_shadow_existing_ones():
    a = AnchorDict([Entry("Ravenclaw's Diadem", ["Eagle Diadem"]), Entry("Ron", ["Tom"])])
    b = AnchorDict([Entry("Diadem", ["crown"], "extracted"), Entry("Harry", ["Ron"], "extracted"),
                    Entry("ron", ["bob"], "extracted"), Entry("Quenn", ["Paul"], "extracted")])
    m = a.merged(b)
    assert m.keys() == ["Ravenclaw's Diadem", "Ron", "Quenn"]
    assert m.dropped == ["Diadem", "Harry", "ron"]
    dictionary.check_shadowing(m)


def test_llm_proposals_through_a_real_client_on_loopback(server):
    reply = {"entries": [{"key": "Vexmoor", "translations": ["Riverside", "Millbrook"]}]}
    server.script((200, answer(json.dumps(reply))))
    d = llm_proposals.llm_propose(server.client(), ["Zorblat Quenn lived in Vexmoor."])
    assert d["Vexmoor"].translations == ["Riverside", "Millbrook"]
    sent = server.requests[0]["json"]
    assert sent["response_format"]["json_schema"]["schema"] == llm_proposals.LLM_SCHEMA
    assert sent["messages"][1]["content"] == "Zorblat Quenn lived in Vexmoor."


# ----------------------------------------------------------------- malformed files
@pytest.mark.parametrize("text, message", [
    ('{"version": 1, "entires": []}', "unknown key.*entires"),
    ('[{"key": "Harry", "translations": ["Jon"]}]', "top level must be an object"),
    ('{"version": 1, "entries": [{"key": "Harry", "translations": "Jon"}]}', "must be a list of strings"),
    ('{"version": 1, "entries": {"Harry": ["Jon"]}}', "'entries' must be a list"),
    ('{"version": 1}', "'entries' is missing"),
    ('{"version": 1, "entries": [', "not valid JSON"),
])
def test_malformed_json_is_refused_with_the_fix(tmp_path, text, message):
    (tmp_path / "d.json").write_text(text)
    with pytest.raises(AnchorError, match=message):
        AnchorDict.load(tmp_path / "d.json")


def test_a_string_translation_never_becomes_letters():
    with pytest.raises(AnchorError, match="list of strings"):
        AnchorDict.from_json(json.dumps({"entries": [{"key": "Harry", "translations": "Jon"}]}))


def test_header_only_csv_and_non_utf8_files_are_refused(tmp_path):
    (tmp_path / "empty.csv").write_text("key,translations,provenance,note\n\n")
    with pytest.raises(AnchorError, match="no entries"):
        AnchorDict.load(tmp_path / "empty.csv")
    (tmp_path / "latin.csv").write_bytes("key,translations\nCaf\xe9,Bar\n".encode("latin-1"))
    with pytest.raises(AnchorError, match="not UTF-8.*iconv"):
        AnchorDict.load(tmp_path / "latin.csv")


def test_an_empty_dictionary_only_where_no_anchors_were_asked_for(tmp_path):
    assert len(dictionary.starting_dictionary("none")) == 0
    (tmp_path / "empty.json").write_text('{"version": 1, "entries": []}')
    with pytest.raises(AnchorError, match="ANCHOR_DICTIONARY = 'none'"):
        dictionary.starting_dictionary(str(tmp_path / "empty.json"))
    assert len(dictionary.starting_dictionary("auto", target_text="builtin")) >= 300
    assert len(dictionary.starting_dictionary("auto", target_text="my_book.txt")) == 0


# ----------------------------------------------------------------- coverage
def test_coverage_counts_keys_occurrences_and_share():
    text = "Harry Potter met Ron at Hogwarts. Ron waved."
    table = comparison.coverage(text, {"none": AnchorDict(), "small": small()})
    assert table.loc["none"].tolist() == [0, 0, 0, 0]
    row = table.loc["small"]
    assert (row["keys"], row["keys_in_text"], row["occurrences"]) == (6, 3, 4)   # "Harry Potter" is one span
    assert row["text_share"] == pytest.approx((len("Harry Potter") + 2 * len("Ron") + len("Hogwarts")) / len(text))


def test_added_terms_lists_what_only_the_larger_dictionary_anchors():
    base = AnchorDict([Entry("Harry", ["Jon"])])
    extended = base.merged(AnchorDict([Entry("Azkaban", ["Blackrock"], "extracted"),
                                       Entry("Harry Potter", ["Jon Smith"], "extracted"),
                                       Entry("Ron", ["Tom"], "extracted")]))
    text = "Harry Potter saw Azkaban. Ron and Harry left Azkaban."
    added = comparison.added_terms(text, base, extended)
    # "Harry Potter" overlaps base's "Harry": not new; Azkaban twice, Ron once
    assert added[["key", "occurrences"]].values.tolist() == [["Azkaban", 2], ["Ron", 1]]
    assert added.provenance.tolist() == ["extracted", "extracted"]
    assert comparison.added_terms(text, extended, extended).empty


def test_token_anchors_follow_the_character_spans():
    pieces = ["Harry", " went", " to", " Hog", "warts", " with", " Ronald", "."]
    keys = comparison.token_anchors(pieces, small())
    assert keys == ["Harry", None, None, "Hogwarts", "Hogwarts", None, None, None]   # "Ronald" is not "Ron"
    assert comparison.token_anchors(["", "Ron", "'s"], small()) == [None, "Ron", None]
    assert comparison.token_anchors(pieces, AnchorDict()) == [None] * len(pieces)


def test_newly_anchored_marks_only_the_larger_dictionarys_terms():
    pieces = ["Harry", " saw", " Az", "kaban", " and", " Harry", "."]
    base = AnchorDict([Entry("Harry", ["Jon"])])
    extended = base.merged(AnchorDict([Entry("Azkaban", ["Blackrock"], "extracted")]))
    assert comparison.newly_anchored(pieces, base, extended) == [False, False, True, True, False, False, False]
    assert not any(comparison.newly_anchored(pieces, extended, extended))


class PieceTokenizer:
    """Token id -> its string, enough for ``most_newly_anchored``."""
    pieces = ["Harry", " saw", " Az", "kaban", " and", " Ron", "."]

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def test_the_blocks_with_the_most_newly_anchored_tokens_come_in_block_order():
    base = AnchorDict([Entry("Harry", ["Jon"])])
    extended = base.merged(AnchorDict([Entry("Azkaban", ["Blackrock"], "extracted"), Entry("Ron", ["Tom"], "extracted")]))
    blocks = [[0, 1, 4, 6], [0, 1, 2, 3, 6], [5, 1, 2, 3, 6], [0, 4, 5, 6]]
    few, new = comparison.most_newly_anchored(blocks, PieceTokenizer(), base, extended)
    assert new[2] == [True, False, True, True, False] and not any(new[0])
    assert few == [1, 2]                                   # the two with 3 and 2 new tokens, in block order
    assert comparison.most_newly_anchored(blocks, PieceTokenizer(), base, extended, n=1)[0] == [2]


def test_label_comparison_counts_what_each_dictionary_teaches_at_the_new_terms():
    rows = {"token": ["Harry", " saw", " Az", "kaban", "."], "next (text)": [" saw", " Az", "kaban", ".", "\n"],
            "at_term": [False, True, False, False, False], "in_term": [False, False, True, False, False]}
    labels = {"curated": pd.DataFrame({**rows, "label": [" saw", " Az", "kaban", ".", " x"],
                                       "trained": [True, True, True, True, True]}),
              "curated + extracted": pd.DataFrame({**rows, "label": [" saw", " Black", "kaban", ".", " y"],
                                                   "trained": [True, False, False, True, True]})}
    table, report = comparison.label_comparison(labels, [3])
    assert table.columns.tolist() == ["token", "next (text)", "label: curated", "label: curated + extracted"]
    assert table.values.tolist() == [[" saw", " Az", " Az", "(not trained)"]]
    lines = report.splitlines()
    assert lines[0] == ("curated: of the 1 positions in blocks [3] where the text goes on with a newly anchored "
                        "term, 1 are taught the term's own next token and 0 are not trained")
    assert lines[1].startswith("curated + extracted: of the 1 positions") and lines[1].endswith(
        "0 are taught the term's own next token and 1 are not trained")
    assert lines[2].startswith("Elsewhere in these blocks 1 of 3 labels changed too: B reads a different")
