"""The shared vocabulary of anchored terms (notebook 03): the types a term can
have (``TYPES``), titles (``TITLES``), the head nouns that say a name's type
(``HEADS``: "Alley" a place, "Charm" a spell), words and connectors, and the
small word tests every room of ``anchors`` uses (``common``, ``head_noun``,
``plural_pair``); ``coarse_type`` maps a dictionary note onto ``TYPES`` and
``note_for`` writes one. The function words are ``terms.FUNCTION_WORDS``.
"""
from __future__ import annotations

import re

from wordfreq import zipf_frequency

from ..terms import FUNCTION_WORDS


TYPES = ("person", "place", "organisation", "object", "spell", "creature", "event")

WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]|[A-Za-z]")
CONNECTORS = {"of", "the", "and"}


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
