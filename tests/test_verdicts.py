"""Notebook 07's closing sentences follow the numbers they are printed from."""
import pandas as pd

from nbsupport import verdicts

B_BEFORE, B_AFTER = "group B before relearning (% of baseline)", "group B after 25 relearning steps (% of baseline)"


def _summary():
    return pd.DataFrame({
        "familiarity_drop": {"baseline": 0.0, "WHP paper": 75.0, "WHP soft+kl": 76.0, "ga": 20.0, "npo": 80.0},
        "indirect_drop": {"baseline": 0.0, "WHP paper": 50.0, "WHP soft+kl": 30.0, "ga": 5.0, "npo": 70.0},
        "perplexity_rise": {"baseline": 0.0, "WHP paper": 14.2, "WHP soft+kl": 2.5, "ga": 2.9, "npo": 1.0},
        B_BEFORE: {"baseline": 100.0, "WHP paper": 29.0, "WHP soft+kl": 28.0, "ga": 96.0, "npo": 30.0},
        B_AFTER: {"baseline": 111.0, "WHP paper": 70.0, "WHP soft+kl": 44.0, "ga": None, "npo": 40.0}})


def test_each_model_gets_the_verdict_its_numbers_give():
    lines = verdicts.verdict_lines(_summary(), 25)
    # WHP paper: rose 41 points, 30 beyond the baseline's 11: 30 / (100 - 29) = 42% of what was removed
    assert lines[0].startswith("WHP paper: hidden, not removed")
    # soft+kl: rose 16, 5 beyond the baseline: 7% came back; but its indirect drop 30 < 76 / 2
    assert lines[1].startswith("WHP soft+kl: avoids the names")
    assert lines[2].startswith("ga: forgot little")
    assert lines[3].startswith("npo: no sign of hiding under these attacks")   # rose 10, less than the baseline's 11
    assert len(lines) == 4                                                # no verdict for the baseline


def test_what_came_back_is_counted_beyond_the_baseline_rise():
    row = pd.Series({"familiarity_drop": 80.0, "indirect_drop": 70.0, B_BEFORE: 20.0, B_AFTER: 45.0})
    assert verdicts.verdict(row, 25, base_rise=0.0) == verdicts.HIDDEN       # 25 / 80 = 31%
    assert verdicts.verdict(row, 25, base_rise=11.0) == verdicts.HOLDS       # 14 / 80 = 18%


def test_the_rule_line_names_who_breaks_plus_three_percent_and_who_ran_out_of_steps():
    lines = verdicts.rule_lines(_summary(), {"ga": 12, "npo": 4}, {"ga": 12, "npo": 8}, method_steps=12)
    assert "WHP paper (+14.2%)" in lines[0] and "soft+kl" not in lines[0] and "npo" not in lines[0]
    assert lines[1].startswith("Stopped because the budget of 12 steps ended") and "ga; with more steps it" in lines[1]
    assert "npo" not in lines[1]
    keeps = verdicts.rule_lines(_summary().drop(index="WHP paper"), {"npo": 4}, {"npo": 8}, 12)
    assert keeps == ["The +3% rule: the methods trained here are early-stopped within it; every model here keeps it."]


def test_the_reminder_is_narrated_against_the_baselines_own_gain():
    reminder = pd.DataFrame({"without primer": {"baseline": 0.10, "WHP soft+kl": 0.02, "ga": 0.09},
                             "with primer": {"baseline": 0.24, "WHP soft+kl": 0.026, "ga": 0.216}})
    line = verdicts.reminder_line(reminder)
    assert "the baseline 2.4x; WHP soft+kl 1.3x, ga 2.4x" in line
    assert "raises ga as much as the baseline" in line and "raises WHP soft+kl less than the baseline" in line


def test_the_two_instruments_are_named_with_both_numbers():
    evaluation = {"results": {"baseline": {"token_familiarity": 0.08, "perplexity": 20.0},
                              "paper": {"token_familiarity": 0.02, "perplexity": 23.0}}}
    line = verdicts.instrument_line(_summary(), evaluation)
    assert "WHP paper: 75.0% gone at +15.0% perplexity in notebook 06, 75.0% at +14.2% here" in line
    assert verdicts.instrument_line(_summary().drop(index="WHP paper"), evaluation) == ""
