"""Is it really gone? Measures that look past the familiarity score
(ALGORITHM.md sections 7-8).

* Relearning (Lynch et al. 2024; Deeb & Roger): finetune a copy of the
  unlearned model for a few steps on a little related text and watch familiarity
  come back. The token probes are split in two groups (``probe_groups``): the
  relearning text (``nbsupport/data/corpus/relearn/group_a.md``) states group A's
  facts only, so group A coming back is *relearned*, while group B coming back
  (never shown again) is *recovered*: the knowledge was suppressed, not removed.
* In-context reminder (``with_primer``): the same probes after a short paragraph
  about the target world (which names none of the answers).
* Membership signal, Min-K% probability (Shi et al. 2023): members of the
  training data have fewer very unlikely tokens. ``membership_auc`` of the
  forget text against unseen text tells whether a model still "recognises" it.
  On the built-in corpus this is not meaningful for B: the base model never read
  our text (it was written for this course), so members and non-members are
  equally new to it; it only makes sense for a target the base model was trained on
  (real books), or between R (which read the corpus) and an unseen text.
"""
from __future__ import annotations

import copy
import math
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from transformers import TrainerCallback

from . import config, evaluate, models, package_data, probe
from .corpus import make_blocks
from .pair import device_of
from .scoring import chunk_texts, eval_mode, pad_id, pad_right, share_pct
from .training import BlockDataset, TrainSettings, attach_lora, train

# The attacker: every weight of the unlearned model finetuned for a few steps of 4 x 128
# tokens at 3e-5. A fresh LoRA (r 8, lr 1e-4, batch 2) was tried first: it barely moved
# even the baseline (group A +27% in 25 steps), too weak to tell hiding from removing.
RELEARN_SETTINGS = TrainSettings(method="full", learning_rate=3e-5, batch_size=4, save_steps=10**9, seed=0)

# A model whose group B keeps at least this share (%) of the baseline's familiarity was
# never suppressed there: relearning has nothing to bring back (``nothing_to_recover``).
NOT_SUPPRESSED = 95.0


# ----------------------------------------------------------------- probe groups
def _number(probe_id: str) -> int:
    m = re.search(r"(\d+)$", probe_id)
    if not m:
        raise ValueError(f"probe id {probe_id!r} has no numeric part (like 'hp-tok-001')")
    return int(m.group(1))


def probe_groups(probes: Sequence[probe.TokenProbe]) -> dict[str, list[probe.TokenProbe]]:
    """``{"A": probes with an odd id number, "B": even}``: hp-tok-001 is in A,
    hp-tok-002 in B. The relearning text states group A's facts only."""
    groups = {"A": [], "B": []}
    for p in probes:
        groups["A" if _number(p.id) % 2 else "B"].append(p)
    return groups


def relearn_text() -> str:
    """The built-in relearning text: the facts of group A, none of group B."""
    return package_data("corpus", "relearn", "group_a.md").read_text("utf-8")


# ----------------------------------------------------------------- relearning
class _Measure(TrainerCallback):
    def __init__(self, tok, groups: dict, steps: set[int], batch_size: int):
        self.tok, self.groups, self.steps, self.batch_size = tok, groups, steps, batch_size
        self.rows: list[dict] = []

    def measure(self, model, step: int) -> None:
        if step not in self.steps or any(r["step"] == step for r in self.rows):
            return
        everything = [p for group in self.groups.values() for p in group]
        table = probe.token_familiarity(model, self.tok, everything, self.batch_size, progress=False)
        row, at = {"step": step}, 0
        for name, group in self.groups.items():
            row[name] = probe.familiarity_score(table.iloc[at:at + len(group)])
            at += len(group)
        self.rows.append(row)

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.measure(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kw):
        self.measure(model, state.global_step)
        control.should_save = False   # the attacker's weights are thrown away: no final checkpoint


def _copy_to_train(model_or_adapter_dir, tok, device):
    if isinstance(model_or_adapter_dir, (str, Path)):
        model, loaded_tok = models.load_model(model_or_adapter_dir, device=device)
        tok = tok or loaded_tok
    else:
        model = copy.deepcopy(model_or_adapter_dir)
    if hasattr(model, "merge_and_unload"):
        # the unlearned model's weights, as one plain model: the attacker's LoRA goes on top
        model = model.merge_and_unload()
    if tok is None:
        raise ValueError("pass the tokenizer (tok) with a model object")
    return model, tok


def relearn(model_or_adapter_dir, tok, text: str, steps: Sequence[int] = (0, 10, 25),
            groups: dict | Sequence[probe.TokenProbe] | None = None, settings: TrainSettings | None = None,
            block_size: int = 128, device=None, batch_size: int = 16, progress: bool = False,
            start: dict | None = None) -> pd.DataFrame:
    """Finetune a COPY of a model on ``text`` and measure familiarity at ``steps``.

    ``model_or_adapter_dir``: a model (copied, which costs one more model's memory;
    the original is untouched) or a directory to load (an adapter on its base, or a full model). The copy's
    weights are merged into one plain model, which is finetuned in full
    (``RELEARN_SETTINGS``: a few steps of a small batch, fixed seed; ``settings`` to
    change them, e.g. ``method="lora"`` for a fresh adapter on top). A short attack
    is the point: whatever it brings back, a longer one would too.

    ``text`` is cut into ``block_size`` token blocks. ``groups`` are probe groups
    (``probe_groups``; a plain list is one group "all"); only they are measured,
    at each step in ``steps`` (0 = before any training). Returns a DataFrame
    indexed by step, one familiarity column per group.

    ``start`` ({group: familiarity}): step 0 when it was already measured on this
    model with the same probes (e.g. with ``familiarity_of`` on ``evaluate.measure``'s
    token table); that measure is then not repeated.
    """
    if not steps or min(steps) < 0:
        raise ValueError("steps must be a non-empty list of step numbers >= 0")
    if groups is None:
        raise ValueError("give the probe groups to measure, e.g. probe_groups(probes)")
    groups = dict(groups) if isinstance(groups, dict) else {"all": list(groups)}
    settings = replace(settings or RELEARN_SETTINGS, max_steps=max(steps))
    model, tok = _copy_to_train(model_or_adapter_dir, tok, device)
    measure = _Measure(tok, groups, set(steps), batch_size)
    if start is not None and 0 in steps:
        if set(start) != set(groups):
            raise ValueError(f"start has the groups {sorted(start)}, the probes {sorted(groups)}: give one "
                             "familiarity per group")
        measure.rows.append({"step": 0, **{name: float(start[name]) for name in groups}})
    if max(steps) == 0:
        measure.measure(model, 0)
    else:
        config.set_seed(settings.seed)  # the adapter's initial weights, then the Trainer's data order
        if settings.method == "lora":
            model = attach_lora(model, settings)
        else:
            model.requires_grad_(True)
        dataset = BlockDataset(make_blocks(text, tok, block_size))
        with tempfile.TemporaryDirectory(prefix="relearn-") as scratch:
            train(model, dataset, scratch, settings, resume=False, callbacks=[measure], progress=progress,
                  desc="relearning attack")
    del model
    return pd.DataFrame(measure.rows).set_index("step").sort_index()


def familiarity_of(table: pd.DataFrame, probes: Sequence[probe.TokenProbe]) -> float:
    """The familiarity of ``probes`` read from a ``probe.token_familiarity`` table that
    holds them (e.g. ``evaluate.measure``'s ``tables["token"]`` over a larger set):
    the mean target mass of those rows, as measuring them alone would give."""
    ids = [p.id for p in probes]
    if not ids:
        raise ValueError("no probes given")
    missing = sorted(set(ids) - set(table["id"]))
    if missing:
        raise ValueError(f"the table does not hold the probes {missing[:5]}: measure them, or read them "
                         "from a table of a set that includes them")
    return float(table.drop_duplicates("id").set_index("id").loc[ids, "p_target"].mean())


def nothing_to_recover(start: dict, baseline_start: dict, threshold: float = NOT_SUPPRESSED) -> str | None:
    """Why relearning would tell nothing about a model, or None when it would.

    ``start`` and ``baseline_start`` are the model's and the baseline's group
    familiarities before relearning ({"A": .., "B": ..}). Relearning asks whether
    group B, suppressed by unlearning, comes back; a model whose group B still has at
    least ``threshold`` % of the baseline's familiarity was never suppressed there, and
    the attack would only retrace the baseline's own curve.
    """
    if "B" not in start or "B" not in baseline_start:
        raise ValueError("give the familiarity of probe group B, before relearning, for the model and the baseline")
    share = recovery_share(start["B"], baseline_start["B"])
    if share < threshold:
        return None
    return (f"group B was never suppressed ({share:.0f}% of the baseline's familiarity before relearning, "
            f"at least {threshold:g}%): the attack would only retrace the baseline's curve")


def recovery_share(familiarity_after, baseline_familiarity):
    """Percent of the baseline's familiarity that came back: 100 * after / baseline.
    Works on numbers or pandas columns."""
    if isinstance(baseline_familiarity, (int, float)) and baseline_familiarity <= 0:
        raise ValueError(f"the baseline's familiarity ({baseline_familiarity}) must be above 0 "
                         "for a share to mean anything")
    return share_pct(familiarity_after, baseline_familiarity)


def relearn_models(shelf: models.ModelShelf, tables: dict, groups: dict, relearnable, steps: Sequence[int],
                   relearn_all: bool = False, cpu_bf16: bool | None = None, device=None) -> tuple[dict, dict]:
    """``relearn`` each model of ``shelf`` named in ``relearnable`` (those with weights of
    their own: not inference-time WHP) on ``relearn_text()``, with ``RELEARN_SETTINGS``
    (``cpu_bf16`` as given) at ``steps``, measuring the probe ``groups``. Step 0 of every
    curve is read from the model's token table in ``tables`` (``evaluate.measure``'s).

    A model whose group B was never suppressed (``nothing_to_recover``) is not relearned
    unless ``relearn_all``: its curve is step 0 alone. The baseline is always relearned.
    Returns ``(recovery, skipped)``: ``{model: curve}`` for ``recovery_table`` and
    ``{model: why it was not relearned}``.
    """
    text = relearn_text()
    attacker = replace(RELEARN_SETTINGS, cpu_bf16=cpu_bf16)
    before = {name: {g: familiarity_of(tables[name]["token"], ps) for g, ps in groups.items()} for name in shelf}
    recovery, skipped = {}, {}
    for name in shelf:
        if name not in relearnable:
            continue
        why_not = None if relearn_all or name == "baseline" else nothing_to_recover(before[name], before["baseline"])
        if why_not:
            skipped[name] = why_not
            recovery[name] = pd.DataFrame(before[name], index=pd.Index([0], name="step"))
            continue
        model, tok = shelf.get(name)   # relearn trains a copy: the shelf's model stays as it was
        recovery[name] = relearn(model, tok, text, steps=steps, groups=groups, settings=attacker, device=device,
                                 start=before[name])
    return recovery, skipped


# ----------------------------------------------------------------- in-context reminder
def load_primer() -> str:
    """The built-in primer: a paragraph about the target world naming none of the answers."""
    return package_data("probes", "primer.md").read_text("utf-8").strip()


def with_primer(probes: Sequence[probe.TokenProbe], primer_text: str | None = None) -> list[probe.TokenProbe]:
    """The same probes with ``primer_text`` (default ``load_primer()``) and a blank
    line before each prompt; targets and generics unchanged."""
    primer = (load_primer() if primer_text is None else primer_text).strip()
    if not primer:
        raise ValueError("the primer is empty")
    return [replace(p, prompt=f"{primer}\n\n{p.prompt}") for p in probes]


def reminder_table(shelf: models.ModelShelf, tables: dict, probes: Sequence[probe.TokenProbe],
                   batch_size: int = 16) -> pd.DataFrame:
    """Each model of ``shelf`` (``models.ModelShelf``) on ``probes`` without and with the
    primer (``with_primer``), one row per model: "without primer" is read from the model's
    token table in ``tables`` (``evaluate.measure``'s, over a set that holds ``probes``),
    "with primer" measured here."""
    primed = with_primer(probes)
    reminder = {}
    for name in shelf:
        model, tok = shelf.get(name)
        plain = familiarity_of(tables[name]["token"], probes)   # measured already: same model, same probes
        hinted = probe.familiarity_score(probe.token_familiarity(model, tok, primed, batch_size, progress=False))
        reminder[name] = {"without primer": plain, "with primer": hinted}
    return pd.DataFrame(reminder).T


# ----------------------------------------------------------------- membership (Min-K%)
def min_k(token_logprobs: torch.Tensor, k: float = 0.2) -> float:
    """Mean of the lowest ``k`` fraction (at least one) of token log-probs [n]."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    if token_logprobs.numel() == 0:
        raise ValueError("no token log-probs")
    n = max(1, math.ceil(k * token_logprobs.numel()))
    return float(token_logprobs.flatten().double().sort().values[:n].mean())


@torch.no_grad()
def token_logprobs(model, tok, text: str, block_size: int = 256, batch_size: int = 4) -> torch.Tensor:
    """log P(token | earlier tokens) for every predicted token of ``text``: [n] on the
    CPU (chunked as ``scoring.perplexity`` chunks it)."""
    chunks = chunk_texts(tok, [text], block_size)
    out = []
    with eval_mode(model):
        for lo in range(0, len(chunks), batch_size):
            input_ids, mask = pad_right(chunks[lo:lo + batch_size], pad_id(tok))
            logits = model(input_ids=input_ids.to(device_of(model)),
                           attention_mask=mask.to(device_of(model))).logits[:, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None].to(logits.device))
            out.append(logp.squeeze(-1).cpu()[mask[:, 1:].bool()])
    return torch.cat(out)


def min_k_scores(model, tok, texts: Sequence[str], k: float = 0.2, block_size: int = 256,
                 batch_size: int = 4) -> list[float]:
    """Min-K% score of each text: the mean of its lowest ``k`` fraction of token
    log-probs. Higher (less negative) = looks more like training data."""
    return [min_k(token_logprobs(model, tok, t, block_size, batch_size), k) for t in texts]


def membership_auc(scores_members: Sequence[float], scores_nonmembers: Sequence[float]) -> float:
    """P(a member scores higher than a non-member), ties counting half (the
    Mann-Whitney U statistic over n_members * n_nonmembers). 0.5 = no signal."""
    members, others = list(map(float, scores_members)), list(map(float, scores_nonmembers))
    if not members or not others:
        raise ValueError("need at least one member and one non-member score")
    ranks = pd.Series(members + others).rank(method="average")
    u = ranks.iloc[:len(members)].sum() - len(members) * (len(members) + 1) / 2
    return float(u / (len(members) * len(others)))


def recovery_table(curves: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (model, relearning step) from ``relearn``'s curves ({model: curve}):
    each group's familiarity and its share of the baseline's familiarity before relearning
    (``group A % of baseline``). ``curves`` must hold ``"baseline"`` with a step-0 row."""
    if "baseline" not in curves or 0 not in curves["baseline"].index:
        raise ValueError("the curves need the baseline's, measured at step 0")
    base0 = curves["baseline"].loc[0]
    rows = []
    for name, curve in curves.items():
        for step, row in curve.iterrows():
            rows.append({"model": name, "step": step, **{f"group {g}": row[g] for g in ("A", "B")},
                         **{f"group {g} % of baseline": recovery_share(row[g], base0[g]) for g in ("A", "B")}})
    return pd.DataFrame(rows)


def summary_table(measured: dict[str, dict], reminder: pd.DataFrame, recovery: pd.DataFrame,
                  stopped: dict | None = None, seconds: dict | None = None) -> pd.DataFrame:
    """Notebook 07's table, one row per model (``measured``: {model: ``evaluate.measure``
    numbers}, with ``"baseline"``):

    * forget: ``familiarity_drop`` and ``indirect_drop`` (% of the baseline's target
      probability removed), ``completion_familiarity`` (the judge, 0-1);
    * cost: ``perplexity_rise`` (%), ``knowledge_points``, ``kl_to_baseline`` (nats);
    * robustness: familiarity with the primer as % of the baseline's with the primer
      (``reminder``: columns "without primer", "with primer"), and each group's familiarity
      after every relearning step as % of the baseline's before relearning (``recovery``,
      from ``recovery_table``);
    * ``early stop step`` (``stopped``) and ``seconds`` (training time) where given.
    """
    if "baseline" not in measured:
        raise ValueError("measured must hold the baseline's numbers")
    rows = {}
    for name, numbers in measured.items():
        rows[name] = {**evaluate.relative_to(measured["baseline"], numbers),
                      **{k: numbers[k] for k in ("completion_familiarity", "kl_to_baseline") if k in numbers}}
    table = pd.DataFrame(rows).T
    order = ["familiarity_drop", "indirect_drop", "completion_familiarity", "perplexity_rise",
             "knowledge_points", "kl_to_baseline"]
    table = table[[c for c in order if c in table]]
    if "baseline" in table.index and "kl_to_baseline" in table:
        table.loc["baseline", "kl_to_baseline"] = 0.0
    table["with primer (% of baseline)"] = share_pct(reminder["with primer"], reminder.loc["baseline", "with primer"])
    for step in sorted(recovery.step.unique()):
        at = recovery[recovery.step == step].set_index("model")
        for g in ("A", "B"):
            name = (f"group {g} before relearning (% of baseline)" if step == 0 else
                    f"group {g} after {step} relearning steps (% of baseline)")
            if step or g == "B":
                table[name] = at[f"group {g} % of baseline"]
    if stopped:
        table["early stop step"] = pd.Series(stopped, dtype="float")
    if seconds:
        table["seconds"] = pd.Series(seconds, dtype="float")
    return table


def _removed(drop: float) -> str:
    """A drop in percent as words: "73% of the target probability removed", or the rise."""
    if drop >= 0:
        return f"{drop:.0f}% of the target probability removed"
    return f"the target probability rose {-drop:.0f}%"


def narrate(summary: pd.DataFrame, last_step: int) -> list[str]:
    """Sentences that read notebook 07's summary table, printed from its numbers so
    they stay true on every model and rerun. ``summary`` is indexed by model with
    the columns the notebook builds (``familiarity_drop``, ``indirect_drop``,
    ``perplexity_rise``, ``group B before relearning (% of baseline)`` and
    ``group B after <last_step> relearning steps (% of baseline)``)."""
    lines = []
    before_b = "group B before relearning (% of baseline)"
    after_b = f"group B after {last_step} relearning steps (% of baseline)"
    # the relearning text can teach group B indirectly too: the baseline's own rise is the yardstick
    base_rise = (summary.loc["baseline", after_b] - 100.0
                 if "baseline" in summary.index and pd.notna(summary.loc["baseline"].get(after_b)) else None)
    for name in [m for m in summary.index if m != "baseline"]:
        row = summary.loc[name]
        parts = [f"{name}: {_removed(row['familiarity_drop'])} on the report probes"]
        if pd.notna(row.get("indirect_drop")):
            parts.append(f"{_removed(row['indirect_drop'])} on the indirect probes")
        if pd.notna(row.get("perplexity_rise")):
            parts.append(f"perplexity {row['perplexity_rise']:+.1f}%")
        before, after = row.get(before_b), row.get(after_b)
        if pd.notna(before):
            if before >= NOT_SUPPRESSED:
                parts.append(f"group B was never suppressed ({before:.0f}% of the baseline's familiarity before "
                             "relearning), so relearning has nothing to bring back"
                             + ("" if pd.notna(after) else " (it was not relearned)"))
            elif pd.notna(after):
                rise = after - before
                beyond = rise - (base_rise or 0.0)
                back = beyond / (100 - before) * 100
                yardstick = "" if base_rise is None else f", against {base_rise:+.0f} for the baseline"
                if rise <= 0 or (back < 0.5 and base_rise is None):
                    came = "none of what was removed came back"
                elif back < 0.5:
                    came = "no more than the same attack gives the baseline"
                else:
                    came = ("" if base_rise is None else "beyond the baseline's rise, ") \
                        + f"{back:.0f}% of what was removed came back"
                parts.append(f"group B (never shown again) went from {before:.0f}% to {after:.0f}% of the baseline's "
                             f"familiarity in {last_step} relearning steps ({rise:+.0f} points{yardstick}): {came}")
        lines.append("; ".join(parts) + ".")
    if "baseline" in summary.index and pd.notna(summary.loc["baseline"].get(after_b)):
        lines.append(f"For reference, the baseline under the same attack reaches {summary.loc['baseline', after_b]:.0f}% "
                     "of its own starting familiarity on group B.")
    return lines
