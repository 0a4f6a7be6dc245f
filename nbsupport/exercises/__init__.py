"""Exercises of notebooks 01-07: a check for each, and its reference solution.

Each exercise has a ``check_<name>(answer)``: it runs your function on hand-made,
random (seeded) and edge cases, compares it with expected values worked out by
hand or with the course's own code, prints one line per check (✓ passed, ✗ failed
with a hint) and returns True or False. It never raises because an answer is
wrong; only when your function itself crashes, so that the traceback shows where,
and in batch runs (below).

The reference solutions are here too: ``solution("generic_logits")``. In batch runs
the notebooks fill them in (``fill_solutions``), so the series runs end to end; a
check that then finds a ✗ raises ``ExerciseFailed``, so that the run fails.

=========  ======================================================================
notebook   exercises (``solution(name)`` / ``check_<name>``), module
=========  ======================================================================
01         ``continuation_logprob``, ``probe``: ``nb01``
02         ``generic_logits``, ``alpha_puzzle``: ``nb02``
03         ``anchor_quiz``, ``merge_rules``, ``replace_terms``: ``nb03``
04         ``token_mapping``, ``forbid_translations``: ``nb04``
05         ``soft_cross_entropy``, ``kl_retain``: ``nb05``
06         ``relative_change``, ``judge``: ``nb06``
07         ``biggest_comeback``, ``relearning_auc``: ``nb07``
=========  ======================================================================

``harness`` holds what they share: the report, the comparison helpers, the
solutions' registry and the batch flag.
"""
from . import nb01, nb02, nb03, nb04, nb05, nb06, nb07
from .harness import ExerciseFailed, fill_solutions, solution
from .nb01 import check_continuation_logprob, check_probe
from .nb02 import check_alpha_puzzle, check_generic_logits
from .nb03 import check_anchor_quiz, check_merge_rules, check_replace_terms
from .nb04 import AnchorSpan, check_forbid_translations, check_token_mapping
from .nb05 import check_kl_retain, check_soft_cross_entropy
from .nb06 import check_judge, check_relative_change
from .nb07 import check_biggest_comeback, check_relearning_auc

EXERCISES = {"01": nb01.NAMES, "02": nb02.NAMES, "03": nb03.NAMES,
             "04": nb04.NAMES, "05": nb05.NAMES, "06": nb06.NAMES,
             "07": nb07.NAMES}

__all__ = ["EXERCISES", "AnchorSpan", "ExerciseFailed", "fill_solutions", "solution",
           "check_continuation_logprob", "check_probe", "check_generic_logits", "check_alpha_puzzle",
           "check_anchor_quiz", "check_merge_rules", "check_replace_terms", "check_token_mapping",
           "check_forbid_translations", "check_soft_cross_entropy", "check_kl_retain",
           "check_relative_change", "check_judge", "check_biggest_comeback", "check_relearning_auc"]
