import pytest
import torch

from nbsupport import config, probe


def test_profiles_share_their_parameters():
    names = {frozenset(p) for p in config.PROFILES.values()}
    assert len(names) == 1
    assert {"smoke", "cpu", "gpu", "paper"} <= set(config.PROFILES)


def test_overrides_apply_and_none_keeps_the_profile():
    cfg = config.resolve("smoke", top_k=3, model=None, N_TOKEN_PROBES=5)
    assert cfg.top_k == 3 and cfg.n_token_probes == 5
    assert cfg.model == config.PROFILES["smoke"]["model"] and cfg.profile == "smoke"
    # the smoke profile measures a subset; the cpu profile all probes (None)
    assert config.resolve("cpu").n_token_probes is None
    assert 0 < config.resolve("smoke").n_token_probes < len(probe.load_probes("hp_token"))


@pytest.mark.parametrize("args, message", [
    (("laptop",), "unknown profile"),
    (("cpu",), "unknown parameter"),
])
def test_bad_profile_or_parameter(args, message):
    kwargs = {"learning_rte": 1} if message == "unknown parameter" else {}
    with pytest.raises(config.ConfigError, match=message):
        config.resolve(*args, **kwargs)


@pytest.mark.parametrize("name, value", [
    ("top_k", "ten"), ("top_k", 2.5), ("N_TOKEN_PROBES", "ten"), ("n_token_probes", 1.5),
    ("eval_text_files", "all"), ("target_sha256", 123), ("use_llm", 1), ("alpha", "5"),
    ("finetune_recipes", "paper"), ("sweep_alphas", ["a"]), ("alpha", True),
])
def test_wrong_type_is_refused_even_where_the_default_is_none(name, value):
    with pytest.raises(config.ConfigError, match=f"parameter {name.upper()} should be"):
        config.resolve("cpu", **{name: value})


def test_right_types_are_accepted():
    cfg = config.resolve("cpu", n_token_probes=10, alpha=5, finetune_lr=1e-4, sweep_alphas=(2.5, 10),
                         target_sha256="ab" * 32)
    assert cfg.alpha == 5 and cfg.sweep_alphas == [2.5, 10] and cfg.n_token_probes == 10


def test_every_fixed_parameter_exists_and_belongs_to_a_stage():
    assert set(config.FIXED_BY) <= set(config.PROFILES["cpu"])
    assert set(config.FIXED_BY.values()) <= set(config.STAGES)


def test_seed_makes_torch_repeatable():
    config.set_seed(7)
    a = torch.rand(3)
    config.set_seed(7)
    assert torch.equal(a, torch.rand(3))


def test_progress_bars_follow_the_argument_unless_the_environment_turns_them_off(monkeypatch):
    monkeypatch.delenv("NBSUPPORT_PROGRESS", raising=False)
    assert config.show_progress(True) and not config.show_progress(False)
    monkeypatch.setenv("NBSUPPORT_PROGRESS", "0")
    assert not config.show_progress(True) and not config.show_progress(False)
    monkeypatch.setenv("NBSUPPORT_PROGRESS", "1")
    assert config.show_progress(True)


def test_batch_runs_also_quiet_the_libraries_bars(monkeypatch):
    from transformers.utils import logging as hf_logging

    monkeypatch.delenv("NBSUPPORT_PROGRESS", raising=False)
    config.quiet_library_bars()
    assert hf_logging.is_progress_bar_enabled()          # interactive: left alone
    monkeypatch.setenv("NBSUPPORT_PROGRESS", "0")
    try:
        config.quiet_library_bars()
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
        from huggingface_hub.utils import enable_progress_bars
        enable_progress_bars()


@pytest.mark.parametrize("name, value, allowed", [
    ("alpha", -1.0, ">= 0"), ("top_k", 0, ">= 1"), ("n_token_probes", 0, ">= 1"), ("finetune_lr", 0, "> 0"),
    ("reinforce_method", "ful", "one of 'lora', 'full'"), ("finetune_recipes", ["paper", "sof+kl"], "one of"),
    ("sweep_lrs", [1e-4, -1e-4], "> 0"), ("methods", ["ga", "rmu"], "one of"), ("block_size", 4, ">= 8"),
])
def test_out_of_range_values_are_refused_naming_the_parameter_and_its_range(name, value, allowed):
    with pytest.raises(config.ConfigError, match=f"parameter {name.upper()}: .*must be {allowed}.*got"):
        config.resolve("cpu", **{name: value})


def test_every_profile_value_is_in_range_and_declared_once():
    for profile, values in config.PROFILES.items():
        assert list(values) == list(config.PARAMS), profile
        for name, value in values.items():
            config.check_type(name, value)


def test_the_declared_choices_are_the_packages_own():
    from nbsupport import finetune, methods

    assert set(config.PARAMS["finetune_recipes"].choices) == set(finetune.RECIPES)
    assert set(config.PARAMS["methods"].choices) == set(methods.METHODS)


def test_a_notebook_passes_exactly_the_parameters_its_cell_declares():
    cell = {"PROFILE": "cpu", "RUN_DIR": "runs/x", "ALPHA": 2.5, "TOP_K": None, "INTERACTIVE": False, "alpha": 9}
    assert config.notebook_parameters(cell) == {"alpha": 2.5, "top_k": None}
