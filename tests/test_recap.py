"""Each notebook's closing "What we learned" is printed from what its stage saved."""
import pytest

from nbsupport import recap, runs


@pytest.fixture
def run(tmp_path):
    run = runs.Run(tmp_path)
    run.write_json("baseline/summary.json", {"token_familiarity": 0.0689, "p_hermione": 0.1037,
                                             "completion_familiarity": 0.2917, "knowledge_accuracy": 0.8409,
                                             "n_token_probes": 112, "n_knowledge_probes": 132})
    run.write_json("reinforce/summary.json", {"familiarity_B": 0.080, "familiarity_R": 0.100, "n_blocks": 32,
                                              "block_size": 256})
    run.write_json("labels/summary.json", {"stats": [
        {"alpha": 0.0, "positions": 8192, "trained": 5590, "differ_fraction_of_trained": 0.6821},
        {"alpha": 10.0, "positions": 8192, "trained": 5590, "differ_fraction_of_trained": 0.7512}]})
    run.write_json("finetune/summary.json", {"recipes": ["paper"], "best": "paper", "steps": {"paper": [
        {"step": 0, "familiarity": 0.080, "perplexity": 20.0}, {"step": 24, "familiarity": 0.020, "perplexity": 21.0}]}})
    run.write_json("anchors/summary.json", {"keys": 3, "curated": 699, "extracted": 85, "llm": 0,
                                            "ordinary_english": ["London", "Location"]})
    run.write_json("anchors/dictionary.json", {"version": 1, "entries": [
        {"key": "Harry", "translations": ["Jon"], "provenance": "curated"},
        {"key": "Ron", "translations": ["Tom"], "provenance": "curated"},
        {"key": "Vexmoor", "translations": ["Tilford"], "provenance": "extracted"}]})
    run.write_json("evaluate/summary.json", {"results": {
        "baseline": {"token_familiarity_report": 0.1, "perplexity": 20.0},
        "paper": {"token_familiarity_report": 0.005, "perplexity": 23.0}}, "knowledge_flips": {"paper": {"p_value": 0.5}}})
    return run


def test_every_recap_quotes_the_saved_numbers(run):
    assert "0.069 of its probability" in recap.learned(run, "baseline") and "84.1% of 132" in recap.learned(run, "baseline")
    assert "0.080 -> 0.100, +25.0%" in recap.learned(run, "reinforce")
    labels = recap.learned(run, "labels")
    assert "at alpha 0, 68.2%" in labels and "at alpha 10, 75.1%" in labels and "Of 8192 positions, 5590" in labels
    assert "paper: familiarity 75.0% lower, perplexity +5.0% after 24 steps" in recap.learned(run, "finetune")
    anchors = recap.learned(run, "anchors")
    assert "(London, Location)" in anchors and "3 keys (2 curated, 1 extracted, 0 from an LLM)" in anchors
    assert "paper: forgetting 95.0% (met), perplexity +15.0% (missed by 12.0 points)" in recap.learned(run, "evaluate")


def test_a_recap_before_its_stage_ran_names_the_missing_file(tmp_path):
    with pytest.raises(Exception, match="summary.json"):
        recap.learned(runs.Run(tmp_path), "baseline")
