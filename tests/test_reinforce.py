import pytest
import torch

from conftest import make_tiny_model
from nbsupport import corpus, models, reinforce, runs, training
from nbsupport.pair import ModelPair, generic_logits

TEXT = "Harry Potter studies magic at a school in the mountains. Ron and Hermione are friends. " * 12


def _blocks(tok, size=16):
    return corpus.make_blocks(TEXT, tok, size)


def _loss(model, blocks):
    with torch.no_grad():
        return model(input_ids=blocks, labels=blocks).loss.item()


def test_reinforcement_lowers_loss_and_adapter_off_is_exactly_b(tmp_path, tiny_model_dir, tiny_tokenizer):
    base, _ = models.load_model(tiny_model_dir, device="cpu")
    blocks = _blocks(tiny_tokenizer)
    with torch.no_grad():
        b_logits = base(input_ids=blocks[:2]).logits.clone()
    before = _loss(base, blocks)
    run = runs.Run(tmp_path)
    settings = training.TrainSettings(learning_rate=1e-2, batch_size=4, max_steps=15, lora_r=4,
                                      lora_alpha=8, save_steps=100)
    pair, losses = reinforce.reinforce(base, blocks, run, settings, resume=False)
    assert pair.shares_weights
    assert _loss(pair.model, blocks) < before - 0.3
    assert len(losses) == 15 and losses[-1]["loss"] < losses[0]["loss"]
    v_b, v_r = pair.logits(blocks[:2])
    assert torch.equal(v_b, b_logits)  # the adapter off gives B back exactly
    assert not torch.allclose(v_r, v_b)
    # the saved adapter (Hugging Face format) reloads on its base to the same R
    loaded, _ = models.load_model(run.path("reinforce/adapter"), device="cpu")
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=blocks[:2]).logits, v_r, atol=1e-5)
    assert run.read_json("reinforce/losses.json") == losses


def test_full_finetuning_trains_a_copy(tmp_path, tiny_tokenizer, tiny_model_dir):
    model = make_tiny_model(len(tiny_tokenizer), seed=1)
    blocks = _blocks(tiny_tokenizer)
    before = _loss(model, blocks)
    settings = training.TrainSettings(method="full", learning_rate=3e-3, batch_size=4, max_steps=10,
                                      save_steps=100)
    pair, _ = reinforce.reinforce(model, blocks, runs.Run(tmp_path), settings, resume=False, tok=tiny_tokenizer)
    assert not pair.shares_weights
    assert _loss(pair.model, blocks) < before
    with pair.base() as B:
        assert _loss(B, blocks) == pytest.approx(before, rel=1e-5)  # B is a fresh copy of the base
    assert (tmp_path / "reinforce" / "model" / "config.json").is_file()
    loaded, tok = reinforce.load_reinforced(runs.Run(tmp_path), tiny_model_dir, "full", device="cpu")
    assert _loss(loaded.model, blocks) == pytest.approx(_loss(pair.model, blocks), rel=1e-5)


def test_resume_continues_and_refuses_changed_settings(tmp_path, tiny_tokenizer):
    blocks = _blocks(tiny_tokenizer)
    settings = training.TrainSettings(batch_size=4, max_steps=4, save_steps=2, lora_r=2)
    model = training.attach_lora(make_tiny_model(len(tiny_tokenizer)), settings)
    trainer = training.train(model, training.BlockDataset(blocks), tmp_path, settings, progress=False)
    assert (tmp_path / "checkpoint-4").is_dir() and trainer.state.global_step == 4
    again = training.train(model, training.BlockDataset(blocks), tmp_path, settings, progress=False)
    assert again.state.global_step == 4  # resumed at the end: nothing left to do
    changed = training.TrainSettings(batch_size=4, max_steps=6, save_steps=2, lora_r=2)
    with pytest.raises(training.TrainingError, match="other settings"):
        training.train(model, training.BlockDataset(blocks), tmp_path, changed, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "qlora"}, "method"), ({"learning_rate": 0}, "learning_rate"),
    ({"epochs": 0, "max_steps": -1}, "epochs"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(training.TrainingError, match=message):
        training.TrainSettings(**kwargs)


def test_block_dataset_checks_shapes():
    with pytest.raises(ValueError, match="n_blocks"):
        training.BlockDataset(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="must match"):
        training.BlockDataset(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))


def test_generic_logits_push_down_only_what_reinforcement_raised():
    v_b = torch.tensor([1.0, 2.0, 3.0, 0.0])
    v_r = torch.tensor([1.0, 3.0, 2.0, 4.0])
    assert torch.equal(generic_logits(v_b, v_r, 2.0), torch.tensor([1.0, 0.0, 3.0, -8.0]))
    assert torch.equal(generic_logits(v_b, v_r, 0.0), v_b)
    with pytest.raises(ValueError, match="shapes differ"):
        generic_logits(v_b, v_r[:3], 1.0)
    with pytest.raises(ValueError, match="alpha"):
        generic_logits(v_b, v_r, -1.0)


def test_reinforcement_effect_and_topk_tables(tiny_model_dir, tiny_tokenizer, tmp_path):
    base, tok = models.load_model(tiny_model_dir, device="cpu")
    settings = training.TrainSettings(learning_rate=1e-2, batch_size=4, max_steps=5, lora_r=4, save_steps=100)
    blocks = _blocks(tok)
    pair, _ = reinforce.reinforce(base, blocks, runs.Run(tmp_path), settings, resume=False)
    effect = reinforce.reinforcement_effect(pair, blocks, max_blocks=3, batch_size=2, sample_per_position=4)
    v_b, v_r = pair.logits(blocks[:3])
    assert effect["diff_sample"].shape == (3 * blocks.shape[1] * 4,)
    # brute force: the gain of the actual next token, accumulated position by position
    lp_b, lp_r = torch.log_softmax(v_b, -1), torch.log_softmax(v_r, -1)
    sums, counts = torch.zeros(v_b.shape[-1]), torch.zeros(v_b.shape[-1])
    for b in range(3):
        for t in range(blocks.shape[1] - 1):
            nxt = blocks[b, t + 1]
            sums[nxt] += lp_r[b, t, nxt] - lp_b[b, t, nxt]
            counts[nxt] += 1
    assert torch.allclose(effect["gain_sum"], sums, atol=1e-4) and torch.equal(effect["gain_count"], counts)
    top = reinforce.most_boosted(effect, tok, k=3, min_count=1)
    assert top["mean_logprob_gain"].is_monotonic_decreasing
    best = int((torch.where(counts > 0, sums / counts.clamp(min=1), torch.tensor(-1e9))).argmax())
    assert top["token"].iloc[0] == tok.decode([best])
    table = reinforce.compare_topk(pair, tok, "Harry Potter studies", k=5)
    assert list(table.columns) == ["baseline", "p_baseline", "reinforced", "p_reinforced"]
    gen = reinforce.generic_topk(pair, tok, "Harry Potter studies", alpha=5.0, k=5)
    assert gen["prob"].is_monotonic_decreasing and len(gen) == 5
    ids = tok("Harry Potter studies", return_tensors="pt")["input_ids"]
    v_b, v_r = pair.logits(ids)
    expected = torch.softmax(v_b[0, -1] - 5.0 * torch.relu(v_r[0, -1] - v_b[0, -1]), -1)
    assert gen["prob"].tolist() == pytest.approx(expected.topk(5).values.tolist(), rel=1e-5)


def test_a_full_finetune_step_at_the_papers_rate_changes_a_bf16_model(tmp_path, tiny_tokenizer):
    """At lr 1e-6 a bf16 weight cannot move (its spacing is ~1e-4 at this size):
    training keeps fp32 master weights, so one step does change the model."""
    model = make_tiny_model(len(tiny_tokenizer), seed=3).to(torch.bfloat16)
    before = {k: v.float().clone() for k, v in model.state_dict().items()}
    update = before["model.layers.0.mlp.down_proj.weight"]
    rounded_away = ((update + 1e-6).to(torch.bfloat16).float() == update).float().mean()
    assert rounded_away > 0.9   # the trap: in bf16 almost every such update rounds to nothing
    settings = training.TrainSettings(method="full", learning_rate=1e-6, batch_size=2, max_steps=1, save_steps=100)
    training.train(model, training.BlockDataset(_blocks(tiny_tokenizer)[:2]), tmp_path, settings, progress=False)
    after = model.state_dict()
    assert after["model.layers.0.mlp.down_proj.weight"].dtype == torch.float32
    moved = (after["model.layers.0.mlp.down_proj.weight"] != update).float().mean()
    assert moved > 0.5   # most weights moved, where bf16 weights would have stayed put


@pytest.mark.parametrize("cpu_bf16", [True, False])
def test_cpu_bf16_autocast_covers_the_loss_only(tmp_path, tiny_tokenizer, cpu_bf16):
    """With ``cpu_bf16`` the training forward runs in bf16 on the CPU, while the
    callbacks' measures and every forward after training stay in fp32 (the weights too)."""
    from transformers import TrainerCallback

    model = training.attach_lora(make_tiny_model(len(tiny_tokenizer)), training.TrainSettings(lora_r=2))
    seen = {"train": set(), "callback": set()}
    phase = ["train"]
    layer = model.get_base_model().model.layers[0].mlp.down_proj
    layer.register_forward_hook(lambda mod, inp, out: seen[phase[0]].add(out.dtype))
    blocks = _blocks(tiny_tokenizer)

    class Measure(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            phase[0] = "callback"
            _loss(model, blocks[:1])
            phase[0] = "train"

    settings = training.TrainSettings(batch_size=4, max_steps=2, save_steps=100, lora_r=2, cpu_bf16=cpu_bf16)
    training.train(model, training.BlockDataset(blocks), tmp_path, settings, progress=False, callbacks=[Measure()])
    assert seen["train"] == ({torch.bfloat16} if cpu_bf16 else {torch.float32})
    assert seen["callback"] == {torch.float32}
    seen["after"], phase[0] = set(), "after"
    _loss(model, blocks[:1])
    assert seen["after"] == {torch.float32}
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_cpu_bf16_setting_is_checked():
    with pytest.raises(training.TrainingError, match="cpu_bf16"):
        training.TrainSettings(cpu_bf16="yes")


def test_cpu_bf16_is_a_profile_parameter():
    from nbsupport import config
    assert training.settings_from(config.resolve("cpu"), "finetune").cpu_bf16 is None      # auto
    assert training.settings_from(config.resolve("cpu", cpu_bf16=False), "reinforce").cpu_bf16 is False
    with pytest.raises(config.ConfigError, match="CPU_BF16 should be a bool"):
        config.resolve("cpu", cpu_bf16="no")


def test_R_trained_on_other_blocks_is_stale_even_from_an_interrupted_checkpoint(tmp_path, tiny_tokenizer, capsys):
    """A finished (or interrupted) R is reused only for the same blocks: after the target
    text changes, notebook 02 trains R again instead of loading the old one."""
    run = runs.Run(tmp_path)
    settings = training.TrainSettings(learning_rate=1e-2, batch_size=4, max_steps=4, lora_r=2, save_steps=2)
    blocks, other = _blocks(tiny_tokenizer), _blocks(tiny_tokenizer).flip(1)
    reinforce.reinforce(make_tiny_model(len(tiny_tokenizer)), blocks, run, settings)
    capsys.readouterr()
    _, again = reinforce.reinforce(make_tiny_model(len(tiny_tokenizer)), blocks, run, settings)
    assert "training already finished" in capsys.readouterr().out and again == run.read_json("reinforce/losses.json")
    first = run.read_json("reinforce/losses.json")
    run.path("reinforce/trained.json").unlink()                 # as if interrupted after its checkpoints
    _, fresh = reinforce.reinforce(make_tiny_model(len(tiny_tokenizer)), other, run, settings)
    out = capsys.readouterr().out
    assert "made from another blocks: training again from the start" in out
    assert [h["step"] for h in fresh] == [1, 2, 3, 4] and fresh != first    # not resumed from the old checkpoint
    assert run.read_json("reinforce/inputs.json") == {"blocks": runs.tensor_digest(other)}
