"""Step 2, continued: generic translations for anchored terms, and the rules every
translation obeys (issue 15).

``term_mining`` finds and types the terms of a text; this module turns typed terms
into translations and checks translations from anywhere (offline pools, B's masked
proposals, an LLM) with one set of rules. It knows nothing of texts or models: the
caller passes the terms to stay clear of, each key's type, and any model proposals.

* the shared vocabulary: ``TYPES``, ``FUNCTION_WORDS``, ``TITLES``, the head nouns
  that say a name's type (``HEADS``: "Alley" a place, "Charm" a spell), and
  ``coarse_type`` (a dictionary note -> one of ``TYPES``);
* ``name_pools`` (``data/anchors/name_pools.json``) and ``translation_type``: the
  type a translation reads as;
* ``translation_problems``: why a translation may not stand for a key: a key or
  target term, a piece of one, only function words, or another type;
* ``validate``: those rules over a whole dictionary, with what was rejected and
  why (``rejections``);
* ``translate``: type-matched translations drawn from the pools, consistent across
  a full name and its parts, spells in the form their key is used in;
* ``llm_entries``: the optional LLM step's raw proposals (``LLM_SCHEMA``).
"""
from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import pandas as pd
from wordfreq import zipf_frequency

from . import package_data, terms
from .dictionary import AnchorDict, AnchorError, Entry

TYPES = ("person", "place", "organisation", "object", "spell", "creature", "event")

WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]|[A-Za-z]")
CONNECTORS = {"of", "the", "and"}

# Words a translation may never be (alone), and never a candidate term either.
FUNCTION_WORDS = frozenset("""
a about above across after afterwards again against all almost alone along already also although always am
among an and another any anybody anyone anything anyway anywhere are around as at back be became because
become becomes been before beforehand behind being below beside besides between beyond both but by can
cannot could did do does doing done down during each either else elsewhere enough even ever every everyone
everything everywhere except few first for former formerly from further furthermore had has have having he
hence her here hers herself him himself his how however i if in indeed instead into is it its itself just
last later latter least less many may maybe me meanwhile might mine more moreover most mostly much must my
myself neither never nevertheless next no nobody none nor not nothing now nowhere of off often on once one
only onto or other others otherwise our ours ourselves out over perhaps please quite rather really same
second several shall she should since so some somebody someone something sometimes somewhere still such
than that the their theirs them themselves then there thereafter therefore these they this those though
through throughout thus to together too toward towards under unless until up upon us very via was we well
were what whatever when whenever where whereas wherever whether which while who whoever whole whom whose
why will with within without would yes yet you your yours yourself yourselves
q a oh ok okay hello thanks thank fun note see
""".split())

TITLES = {"Mr", "Mrs", "Ms", "Miss", "Mister", "Madam", "Madame", "Professor", "Prof", "Dr", "Doctor", "Sir",
          "Lady", "Lord", "Uncle", "Aunt", "Auntie", "Headmaster", "Headmistress", "Minister", "Captain",
          "Master", "Mistress", "Dame", "King", "Queen", "Prince", "Princess", "Saint", "St", "Monsieur"}

# Head nouns: the last word of a multi-word name (or the word before "of") says its type.
HEADS = {
    "place": """alley street drive lane road avenue hall tower towers forest wood woods lake castle manor village
        hollow shack station platform room chamber cottage inn pub shop store hill valley square place corridor
        library hospital school academy prison bank garden gardens grounds cave island bridge ward floor court
        house mountain mountains field fields park river sea bay harbour harbor port town city row yard market
        cellar dungeon dungeons passage gate gates common quarter district moor marsh farm tavern""",
    "organisation": """ministry department office order army society club squad council committee league team
        united network bureau guild brigade association union party agency company firm family eaters
        alliance circle legion brotherhood sisterhood federation organisation organization wizards""",
    "object": """hat cloak stone wand map sword cup locket diadem ring mirror book books beans frog frogs cakes cards
        ears broom broomstick diary egg quill quills glasses key keys prophet newspaper magazine robes
        box chest clock watch goblet basin pensieve vanishing cabinet chess snap gum toffee pops fudge nougat
        creams pasties wands cauldron tea butterbeer""",
    "spell": """curse curses charm charms jinx jinxes hex hexes spell spells potion potions draught draughts elixir
        serum incantation enchantment transfiguration magic""",
    "event": """battle tournament ball ceremony war match feast championship festival wedding funeral trial games
        task tasks""",
    "creature": """dog cat owl rat toad snake dragon spider horse bird elf elves beast beasts giant giants""",
}
HEADS = {k: {w.strip("?") for w in v.split()} for k, v in HEADS.items()}


def _a(noun: str) -> str:
    """ "a place", "an object"."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def common(word: str, zipf: float = 5.0) -> bool:
    return word.lower() in FUNCTION_WORDS or zipf_frequency(word.lower(), "en") >= zipf


def head_noun(term: str) -> str:
    """The head noun of a multi-word name: the word before "of" ("Battle of Hogwarts"),
    else the last word ("Diagon Alley")."""
    ws = term.split()
    if "of" in ws[1:]:
        return ws[ws.index("of") - 1].lower()
    return ws[-1].lower().removesuffix("'s")


def plural_pair(term: str, have) -> str | None:
    """The singular of ``term`` if that is a term too (Dementors -> Dementor), else None."""
    for cut in ("es", "s"):
        if term.endswith(cut) and term[:-len(cut)] in have:
            return term[:-len(cut)]
    return None

def coarse_type(note: str) -> str:
    """Map a dictionary note onto ``TYPES`` ("" for no type, e.g. the curated
    "idiom"): person (male)/person (female)/surname -> person, house -> organisation,
    potion -> spell, sport/money -> object; our own notes ("person (surname)") too."""
    base = (note or "").split(" (")[0].strip().lower()
    mapping = {"surname": "person", "house": "organisation", "potion": "spell", "sport": "object",
               "money": "object", "organization": "organisation", "group": "organisation",
               "magic term": "spell", "spell or magic term": "spell"}
    base = mapping.get(base, base)
    return base if base in TYPES else ""


def note_for(row) -> str:
    if row["type"] != "person":
        return row["type"]
    detail = ", ".join(x for x in (row.get("role", ""), row.get("gender", "")) if x)
    return f"person ({detail})" if detail else "person"


# ----------------------------------------------------------------- translation rules
def name_pools() -> dict[str, list[str]]:
    """Generic replacement words by kind (``data/anchors/name_pools.json``)."""
    doc = json.loads(package_data("anchors", "name_pools.json").read_text("utf-8"))
    return {k: v for k, v in doc.items() if isinstance(v, list)}


# which pools hold which type (a translation found in one has that type)
_POOL_TYPES = {"first_names_male": "person", "first_names_female": "person", "surnames": "person",
               "places": "place", "place_nouns": "place", "organisations": "organisation",
               "organisation_names": "organisation", "objects": "object", "creatures": "creature",
               "pet_names": "creature", "spells": "spell", "magic_nouns": "spell", "events": "event",
               "members": "organisation", "games": "object"}


@lru_cache(maxsize=1)
def _pool_index() -> dict[str, tuple[str, ...]]:
    """Pool entry (lower case, no article) -> the types of the pools holding it
    ("Seal": a spell and a creature; "Redcliffe": a place and an organisation)."""
    out: dict[str, list[str]] = {}
    for pool, items in name_pools().items():
        kind = _POOL_TYPES.get(pool, "")
        for item in items:
            kinds = out.setdefault(item.lower().removeprefix("the "), [])
            if kind and kind not in kinds:
                kinds.append(kind)
    return {k: tuple(v) for k, v in out.items()}


def _singular(word: str) -> str:
    for suffix, repl in (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("xes", "x"), ("ses", "s"), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            return word[:-len(suffix)] + repl
    return word


def translation_types(translation: str) -> tuple[str, ...]:
    """The types a translation can read as: the pools it comes from (also in the
    plural, or after a title or modifier: "Lord Oswald", "Little Pembury"), a
    first name plus surname (person), or its head noun ("the northern village":
    place, "Regional Office of Magic": organisation); () when nothing says."""
    pools = _pool_index()
    ws = [w for w in translation.lower().removeprefix("the ").split() if w.title() not in TITLES]
    if not ws:
        return ()
    for phrase in (" ".join(ws), " ".join(ws[:-1] + [_singular(ws[-1])])):
        if pools.get(phrase):
            return pools[phrase]
    if all("person" in pools.get(w, ()) or "person" in pools.get(_singular(w), ()) for w in ws):
        return ("person",)
    head = head_noun(" ".join(ws))
    for kind in ("place", "organisation", "event", "spell", "object", "creature"):
        if head in HEADS[kind] or _singular(head) in HEADS[kind]:
            return (kind,)
    last = ws[-1] if "of" not in ws[1:] else head
    return pools.get(last) or pools.get(_singular(last)) or ()


def translation_type(translation: str, prefer: str = "") -> str:
    """The type a translation reads as (``translation_types``): ``prefer`` where
    it can read as that, else its first reading; "" when nothing says."""
    kinds = translation_types(translation)
    return prefer if prefer in kinds else (kinds[0] if kinds else "")


def is_function_word(translation: str) -> bool:
    """Only function words ("The", "However", "of the"), or one very common word."""
    ws = [w.lower() for w in WORD.findall(translation)]
    return not ws or all(w in FUNCTION_WORDS for w in ws) or (len(ws) == 1 and zipf_frequency(ws[0], "en") >= 6.0)


def specific_words(targets: Iterable[str]) -> set[str]:
    """The words of target terms that point at the target: a target that is one
    word ("Harry", however common), and every word of a longer one that is not
    ordinary English (zipf 3 or more: "Diagon" of "Diagon Alley", not "Alley")."""
    out = set()
    for t in targets:
        ws = [w.removesuffix("'s") for w in t.split()]
        if len(ws) == 1:
            out.add(ws[0].lower())
        out |= {w.lower() for w in ws if w not in CONNECTORS and not common(w, 3.0)}
    return {w for w in out if len(w) >= 3}


def translation_problems(key: str, translation: str, kind: str, targets: set[str],
                         specific: set[str] | None = None) -> list[str]:
    """Why ``translation`` may not stand for ``key`` (empty if it may).

    ``kind`` is the key's type (``TYPES``, "" if unknown); ``targets`` every key
    and target term. A translation is never a key or target term, never contains
    one, never a piece of one (a word of it inside a target word, "Hog" of
    "Hogwarts", unless it is ordinary English; or a target word inside a word of
    it, "Ron" in "Ronson"), never only function words, and never reads as another
    type than the key's (a person is not translated as a place, nor a spell as a
    creature; a word no pool or head noun types, "Portsmouth", may stand)."""
    if specific is None:
        specific = specific_words(targets)
    low = translation.lower()
    problems = []
    target_low = {t.lower() for t in targets}
    if low in target_low or low.removeprefix("the ") in target_low:
        problems.append("is a key or target term")
    else:
        inside = [t for t in targets if t.lower() != key.lower() and terms.mentions(translation, t)
                  and (" " in t or t.lower() in specific)]
        if inside:
            problems.append(f"contains the target term {inside[0]!r}")
    words = [w.removesuffix("'s").lower() for w in WORD.findall(translation)]
    key_words = {w.lower() for w in key.split()}
    for w in words:
        if w in key_words and w not in specific:
            continue   # the key's own ordinary words ("Hat" of "Sorting Hat") may stay
        if w in specific and not problems:
            problems.append(f"{w!r} is a word of a target term")
            break
        if not common(w, 4.0):
            host = next((s for s in specific if w != s and w in s), None)
            if len(w) >= 2 and host:
                problems.append(f"{w!r} is a piece of the target word {host!r}")
                break
        part = next((s for s in specific if s != w and s in w), None)
        if part:
            problems.append(f"contains the target word {part!r}")
            break
    if is_function_word(translation):
        problems.append("only function words")
    reads_as = translation_type(translation, kind)
    if kind == "person" and reads_as and reads_as != "person":
        problems.append(f"a person translated as a {reads_as}")
    elif kind == "person" and not all(w[:1].isupper() for w in translation.split()):
        problems.append("a person translated as a common noun")
    elif kind and reads_as and reads_as != kind:
        problems.append(f"a {kind} translated as a {reads_as}")
    return problems


REJECTED_COLUMNS = ["key", "translation", "source", "reason"]

def validate(dictionary: AnchorDict, targets: Iterable[str], types: dict[str, str],
             boosts: dict[str, dict[str, float]] | None = None, boost_threshold: float = 0.5,
             source: str = "") -> tuple[AnchorDict, pd.DataFrame]:
    """Check every translation with the rules of ``translation_problems`` (and,
    where ``boosts`` holds key -> {translation: reinforcement boost in the key's
    contexts}, that reinforcement did not raise it by more than ``boost_threshold``
    nats per token).

    ``targets``: terms to stay clear of (the dictionary's keys always count);
    ``types``: key -> type (``TYPES`` or a note; the entry's note where missing).
    Returns (the entries with their valid translations, keys without any left
    out; a DataFrame of what was rejected: key, translation, source, reason)."""
    keys = dictionary.keys()
    targets = set(targets) | set(keys)
    specific = specific_words(targets)
    out, rejected = AnchorDict(), []
    for key in keys:
        entry = dictionary[key]
        kind = types.get(key) or coarse_type(entry.note)
        kind = coarse_type(kind) or kind
        boost = (boosts or {}).get(key, {})
        good = []
        for t in entry.translations:
            problems = translation_problems(key, t, kind, targets, specific)
            if boost.get(t, 0.0) > boost_threshold:
                problems.append(f"reinforcement raised it (boost {boost[t]:.2f} nats/token): target-specific")
            if problems:
                rejected.append({"key": key, "translation": t, "source": source or entry.provenance,
                                 "reason": "; ".join(problems)})
            else:
                good.append(t)
        if good:
            out.add(Entry(key, good, entry.provenance, entry.note))
        else:
            rejected.append({"key": key, "translation": "", "source": source or entry.provenance,
                             "reason": "no valid translation left: key dropped"})
    return out, pd.DataFrame(rejected, columns=REJECTED_COLUMNS)


def rejections(dictionary: AnchorDict) -> pd.DataFrame:
    """What ``propose_translations`` or ``llm_propose`` rejected while building
    ``dictionary``, and why (key, translation, source, reason): for the review table."""
    found = getattr(dictionary, "rejected", None)
    return found.copy() if found is not None else pd.DataFrame(columns=REJECTED_COLUMNS)


# ----------------------------------------------------------------- offline translations
def _plural(word: str) -> str:
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def _pluralise(phrase: str) -> str:
    ws = phrase.split()
    return " ".join(ws[:-1] + [_plural(ws[-1])])


def _title(phrase: str) -> str:
    return " ".join(w if w in CONNECTORS else w[:1].upper() + w[1:] for w in phrase.split())


class _Picker:
    """Draws translations from the pools: seeded, each used once, and only ones
    that pass ``translation_problems`` for the key."""

    def __init__(self, targets: set[str], seed: int):
        self.pools = {k: [p.removeprefix("the ") for p in v] for k, v in name_pools().items()}
        self.targets, self.specific = targets, specific_words(targets)
        self.rng, self.used = random.Random(seed), set()
        self.rejected: list[dict] = []

    def pick(self, key: str, kind: str, pools: Sequence[str], form=lambda s: s, avoid: Iterable[str] = ()) -> str:
        """A valid pool entry for ``key``; one no other key has yet, while there is one."""
        items = [form(p) for name in pools for p in self.pools.get(name, [])]
        avoid = {a.lower() for a in avoid}
        fallback = None
        for t in self.rng.sample(items, len(items)):
            if t.lower() in avoid:
                continue
            if t.lower() in self.used:
                fallback = fallback or t
                continue
            problems = translation_problems(key, t, kind, self.targets, self.specific)
            if problems:
                self.rejected.append({"key": key, "translation": t, "source": "pool", "reason": "; ".join(problems)})
                continue
            self.used.add(t.lower())
            return t
        if fallback is not None and not translation_problems(key, fallback, kind, self.targets, self.specific):
            return fallback   # the pools are used up: share an entry rather than fail
        raise AnchorError(f"the pools {list(pools)} have no usable translation left for {key!r}: "
                          "add entries to name_pools.json")


def _first_name_pools(gender: str) -> list[str]:
    return {"male": ["first_names_male"], "female": ["first_names_female"]}.get(
        gender, ["first_names_male", "first_names_female"])


def _type_pools(kind: str, row: dict) -> list[str]:
    """The pools for a non-person term of ``kind``; ``row`` holds its
    features (``the``: how often the text says "the X"; ``noun_use``: how often
    an article, a possessive or "his"/"her" comes before it)."""
    the = float(row.get("the", 0.0) or 0.0)
    if kind == "place":
        return ["place_nouns"] if the >= 0.5 else ["places"]
    if kind == "organisation":
        if row.get("countable", False):
            return ["members"]   # "an Auror", "Death Eaters": one member of a group
        return ["organisations"] if the >= 0.5 else ["organisation_names"]
    if kind == "creature":
        named = the < 0.2 and not row.get("countable", False)
        return ["pet_names"] if named else ["creatures"]
    if kind == "spell":
        # "cast a Patronus", "the Polyjuice": a magic thing, named by a noun ("Memory Charm");
        # "shouted Expelliarmus": an incantation, one word of command ("Shield")
        noun = float(row.get("noun_use", 0.0) or 0.0) >= 0.2 or row.get("countable", False)
        return ["magic_nouns"] if noun else ["spells"]
    if kind == "event":
        return ["events"]
    if row.get("sport", False):
        return ["games"]
    return ["objects"]


# proposes words for a key, most likely first, with how much reinforcement raised each
# (nats per token in the key's contexts): B's masked predictions, from ``term_mining``
ModelProposals = Callable[[str], dict[str, float]]


def translate(new: Sequence[str], rows: dict[str, dict], targets: Iterable[str], seed: int = 0, n: int = 2,
              model: ModelProposals | None = None, boost_threshold: float = 0.5) -> AnchorDict:
    """``n`` generic translations for each term of ``new``, generic by construction.

    ``rows``: term -> its row of ``term_mining.extract_candidates`` (``type``;
    for persons ``role`` and ``gender``; ``the``, ``noun_use``, ``countable``,
    ``sport``), for the terms of ``new`` and any of their parts. ``targets``:
    terms to stay clear of (``new`` always counts). The type is recorded in each
    entry's note; translations come from the pools of that type
    (``name_pools.json``): first names for first names (by gender), surnames for
    surnames, places for places... A full name is translated part by part, so
    "Harry Potter" -> "Jon Parker" when "Harry" -> "Jon" and "Potter" -> "Parker"
    (the i-th translations agree); a plural follows its singular; ordinary words
    of a name stay ("Sorting Hat" -> "Velvet Hat", "Imperius Curse" -> "Bind
    Curse"). ``model`` (B's masked proposals) is tried first for one-word
    non-person terms; a proposal is kept only if it passes every rule and reads
    as the term's type (never "Question" for a spell).

    Every translation passes ``translation_problems``; what was rejected on the
    way is in ``rejections(result)``."""
    new = list(dict.fromkeys(new))
    targets = set(targets) | set(new)
    picker = _Picker(targets, seed)
    out, words = AnchorDict(), {}   # words: a name part -> its n translations, shared by every key using it
    have = set(new)

    def n_picks(key, kind, pools, form=_title):
        picks = []
        for _ in range(n):
            picks.append(picker.pick(key, kind, pools, form, avoid=picks))
        return picks

    def by_model(key, kind):
        if model is None or " " in key:
            return []
        keep = []
        for t, boost in model(key).items():
            problems = translation_problems(key, t, kind, targets, picker.specific)
            if translation_type(t, kind) != kind:
                problems.append(f"reads as {translation_type(t) or 'no known type'}, not {_a(kind)}: "
                                "not a generic word of the key's type")
            if boost > boost_threshold:
                problems.append(f"reinforcement raised it (boost {boost:.2f} nats/token): target-specific")
            if problems or t.lower() in picker.used:
                picker.rejected.append({"key": key, "translation": t, "source": "model",
                                        "reason": "; ".join(problems) or "already used"})
            else:
                keep.append(t)
                picker.used.add(t.lower())
        return keep[:n]

    def person_part(word, role, gender):
        if word not in words:
            # unknown gender: one gender for all of the key's translations
            gender = gender or picker.rng.choice(["male", "female"])
            pools = ["surnames"] if role == "surname" else _first_name_pools(gender)
            words[word] = n_picks(word, "person", pools)
        return words[word]

    order = sorted(new, key=lambda t: (len(t.split()), bool(plural_pair(t, have))))
    for key in order:
        row = rows[key]
        kind = row.get("type") or "object"
        singular = plural_pair(key, have)
        if singular and singular in out:
            translations = [_pluralise(t) for t in out[singular].translations]
        elif kind == "person":
            translations = _person_translations(key, row, person_part, rows)
        else:
            translations = by_model(key, kind)
            translations += _thing_translations(key, kind, row, words, picker, n - len(translations))
        translations = translations[:n]
        if key[0].islower() and kind != "person":
            translations = [t.lower() for t in translations]
        if " " not in key and key not in words:
            words[key] = translations
        out.add(Entry(key, translations, "extracted", note_for({**row, "type": kind})))
    # composed names and plurals were built from checked parts: check every entry once more, as a whole
    out = AnchorDict(out[k] for k in new)
    valid, rejected = validate(out, targets, {k: coarse_type(out[k].note) for k in out.keys()})
    valid.rejected = pd.DataFrame(picker.rejected + rejected.to_dict("records"), columns=REJECTED_COLUMNS)
    return valid


def _person_translations(key: str, row: dict, person_part, rows: dict) -> list[str]:
    ws = key.split()
    if len(ws) == 1:
        role = row.get("role") or "first name"
        return list(person_part(key, "surname" if role == "surname" else "first name", row.get("gender", "")))
    gender = row.get("gender", "")
    parts = []
    for i, w in enumerate(ws):
        if w in TITLES or w in CONNECTORS:
            parts.append(None)
            continue
        part_row = rows.get(w, {})
        role = part_row.get("role") if part_row.get("type") == "person" else ""
        role = role or ("surname" if i == len(ws) - 1 else "first name")
        parts.append(person_part(w.removesuffix("'s"), role, part_row.get("gender") or gender))
    n = len(next(p for p in parts if p is not None))
    return [" ".join(w if p is None else p[i] + ("'s" if w.endswith("'s") else "") for w, p in zip(ws, parts))
            for i in range(n)]


def _thing_translations(key: str, kind: str, row: dict, words: dict, picker: _Picker, n: int) -> list[str]:
    """Translations of a non-person term: a type-matched pool entry. A multi-word
    name whose parts have translations is translated through them ("Battle of
    Hogwarts" -> "Battle of Westfield", "Malfoy Manor" -> "Fisher Manor"); one
    whose head is an ordinary word gets a new modifier ("Sorting Hat" -> "Velvet
    Hat"; a spell's head stays and gets a spell word: "Imperius Curse" -> "Bind
    Curse"). Whatever fails the rules is replaced by a pool entry."""
    if n <= 0:
        return []
    pools = _type_pools(kind, row)
    modifiers = ["spells"] if kind == "spell" else ["modifiers"]

    def whole(avoid):
        return picker.pick(key, kind, pools, _title, avoid=avoid)

    ws = key.split()
    content = [i for i, w in enumerate(ws) if w not in CONNECTORS and w not in TITLES]
    head = len(ws) - 1 if "of" not in ws[1:] else ws.index("of") - 1

    def ordinary(w):
        return w.lower() not in picker.specific   # a one-word target is specific, unless a head noun

    # parts translated by one word each ("Hogwarts" -> "Westfield"), not by a phrase
    translated = [i for i in content if ws[i].removesuffix("'s") in words
                  and all(" " not in t for t in words[ws[i].removesuffix("'s")])]
    if len(ws) == 1 or not content:
        plan = None
    elif translated and all(i in translated or ordinary(ws[i].removesuffix("'s")) for i in content):
        plan = translated   # every other word is ordinary English: keep it
    elif not translated and head == len(ws) - 1 and ordinary(ws[head]) and (
            all(ordinary(ws[i].removesuffix("'s")) for i in content) or ws[head].lower() in HEADS.get(kind, ())):
        # "Sorting Hat", "Great Hall"; "Polyjuice Potion", whose head says its type: the head stays,
        # with a new modifier
        plan = [i for i in content if i != head]
        words = {}
    else:
        plan = None
    out = []
    for j in range(n):
        t = None
        if plan:
            new_ws = list(ws)
            for i in plan:
                w, poss = ws[i].removesuffix("'s"), ("'s" if ws[i].endswith("'s") else "")
                new_ws[i] = (words[w][j % len(words[w])] + poss if w in words
                             else picker.pick(key, "", modifiers, _title))
            t = " ".join(new_ws)
            problems = translation_problems(key, t, kind, picker.targets, picker.specific)
            if kind and translation_type(t, kind) != kind:   # "Western Eater" says nothing of a group
                problems.append(f"reads as {translation_type(t) or 'no known type'}, not {_a(kind)}")
            if problems or t.lower() in picker.used or t in out:
                picker.rejected.append({"key": key, "translation": t, "source": "pool",
                                        "reason": "; ".join(problems) or "already used"})
                t = None
        t = t or whole(out)
        picker.used.add(t.lower())
        out.append(t)
    return out


# ----------------------------------------------------------------- LLM proposals
LLM_SCHEMA = {
    "type": "object",
    "properties": {"entries": {"type": "array", "items": {
        "type": "object",
        "properties": {"key": {"type": "string", "minLength": 1},
                       "translations": {"type": "array", "minItems": 1,
                                        "items": {"type": "string", "minLength": 1}}},
        "required": ["key", "translations"], "additionalProperties": False}}},
    "required": ["entries"], "additionalProperties": False,
}

LLM_INSTRUCTIONS = (
    "You help remove knowledge of one fictional world from a text. In the passage, find the "
    "expressions that are idiosyncratic to that world (character names, places, creatures, spells, "
    "objects, invented words). For each, give one to three generic alternatives that keep the "
    "sentence coherent: a name becomes a common name of the same kind and gender, a place a generic "
    "place, an invented word an ordinary word of the same part of speech and number. Reply with "
    "JSON only: {\"entries\": [{\"key\": ..., \"translations\": [...]}]}. Keys must appear verbatim "
    "in the passage.")


def llm_entries(client, passages: Sequence[str]) -> tuple[AnchorDict, list[dict]]:
    """Ask an OpenAI-compatible model (``llm_client.LLMClient``) for entries, passage
    by passage, like the paper's GPT-4 step: (the entries, provenance ``llm``; what
    was turned down: keys that do not occur verbatim in their passage, function
    words, translations equal to their key). The translations are not checked
    yet: ``term_mining.llm_propose`` types the keys and ``validate``s them."""
    out, rejected = AnchorDict(), []
    for passage in passages:
        answer = client.chat_json([{"role": "system", "content": LLM_INSTRUCTIONS},
                                   {"role": "user", "content": passage}], LLM_SCHEMA)
        for item in answer["entries"]:
            key = item["key"].strip()
            translations = [t.strip() for t in item["translations"]]
            if not key or terms.count(key, passage) == 0:
                rejected.append({"key": key, "translation": " | ".join(translations), "source": "llm",
                                 "reason": "the key does not occur in its passage"})
                continue
            if is_function_word(key):
                rejected.append({"key": key, "translation": " | ".join(translations), "source": "llm",
                                 "reason": "the key is a function word"})
                continue
            try:
                out.add(Entry(key, translations, "llm"))
            except AnchorError as err:   # e.g. a translation equal to its key: drop it, keep the rest
                keep = [t for t in translations if t and t.lower() != key.lower()]
                rejected.append({"key": key, "translation": " | ".join(t for t in translations if t not in keep),
                                 "source": "llm", "reason": str(err)})
                if keep:
                    out.add(Entry(key, keep, "llm"))
    return out, rejected
