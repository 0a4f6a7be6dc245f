import pytest
import torch

from nbsupport import config


def test_profiles_share_their_parameters():
    names = {frozenset(p) for p in config.PROFILES.values()}
    assert len(names) == 1
    assert {"smoke", "cpu", "gpu", "paper"} <= set(config.PROFILES)


def test_overrides_apply_and_none_keeps_the_profile():
    cfg = config.resolve("smoke", top_k=3, model=None, N_TOKEN_PROBES=5)
    assert cfg.top_k == 3 and cfg.n_token_probes == 5
    assert cfg.model == config.PROFILES["smoke"]["model"] and cfg.profile == "smoke"
    assert config.resolve("smoke").n_token_probes < (config.resolve("cpu").n_token_probes or 10**9)


@pytest.mark.parametrize("args, message", [
    (("laptop",), "unknown profile"),
    (("cpu",), "unknown parameter"),
])
def test_bad_profile_or_parameter(args, message):
    kwargs = {"learning_rte": 1} if message == "unknown parameter" else {}
    with pytest.raises(config.ConfigError, match=message):
        config.resolve(*args, **kwargs)


def test_wrong_type_is_refused():
    with pytest.raises(config.ConfigError, match="should be like"):
        config.resolve("cpu", top_k="ten")


def test_seed_makes_torch_repeatable():
    config.set_seed(7)
    a = torch.rand(3)
    config.set_seed(7)
    assert torch.equal(a, torch.rand(3))
