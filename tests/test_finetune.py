import pytest
import torch

from conftest import make_tiny_model
from nbsupport import finetune, labels, probe, runs, training
from nbsupport.anchors import AnchorDict, Entry

DICT = AnchorDict([Entry("Hogwarts", ["the big old school"]), Entry("Harry", ["Jon"]), Entry("Ron", ["Tom"])])
TEXT = ("Harry Potter studies magic at Hogwarts. Ron and Harry fly at night.\nThe owl flew over "
        "the castle and the cat slept. ") * 6


@pytest.fixture(scope="module")
def label_run(tmp_path_factory, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    from nbsupport import corpus
    tok = tiny_tokenizer
    R = get_peft_model(make_tiny_model(len(tok), seed=4),
                       LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    run = runs.Run(tmp_path_factory.mktemp("ft"))
    blocks = corpus.make_blocks(TEXT, tok, 32)
    labels.generate(R, tok, blocks, run, DICT, [5.0], top_k=8, progress=False)
    return run


def _hard_loss(model, data):
    with torch.no_grad():
        return model(input_ids=data["input_ids"], labels=data["labels@5"]).loss.item()


def test_finetuning_lowers_the_loss_on_generic_labels(label_run, tiny_tokenizer):
    # Full finetuning: a random tiny model's final norm keeps its logits flat, which
    # a LoRA on the inner layers cannot sharpen in a few steps (a real model can).
    data = labels.load(label_run)
    base = make_tiny_model(len(tiny_tokenizer), seed=4)
    before = _hard_loss(base, data)
    settings = training.TrainSettings(method="full", learning_rate=5e-3, batch_size=4, max_steps=30,
                                      save_steps=100)
    U, losses = finetune.finetune(base, data, 5.0, label_run, settings, out="ft-full", resume=False)
    assert _hard_loss(U, data) < before - 1.0
    assert losses[-1]["loss"] < losses[0]["loss"]
    assert (label_run.path("ft-full/model/config.json")).is_file()


def test_lora_result_is_saved_as_adapter_and_merged_weights(label_run, tiny_tokenizer):
    from nbsupport import models
    data = labels.load(label_run)
    settings = training.TrainSettings(learning_rate=2e-2, batch_size=4, max_steps=3, lora_r=8, save_steps=100)
    U, _ = finetune.finetune(make_tiny_model(len(tiny_tokenizer), seed=4), data, 5.0, label_run, settings,
                             out="ft-lora", resume=False, tok=tiny_tokenizer)
    assert (label_run.path("ft-lora/adapter/adapter_config.json")).is_file()
    merged, _ = models.load_model(label_run.path("ft-lora/merged"), device="cpu")
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=data["input_ids"][:2]).logits,
                              U(input_ids=data["input_ids"][:2]).logits, atol=1e-4)
        with U.disable_adapter():
            assert not torch.allclose(merged(input_ids=data["input_ids"][:2]).logits,
                                      U(input_ids=data["input_ids"][:2]).logits, atol=1e-4)


def test_soft_cross_entropy_against_brute_force():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5, 3))
    vals = torch.randn(2, 5, 3)
    lab = torch.tensor([[-100, 1, 2, -100, 4], [-100, 5, 6, 7, 8]])
    got = finetune.soft_cross_entropy(logits, ids, vals, lab)
    total, n = 0.0, 0
    for b in range(2):
        for t in range(4):
            if lab[b, t + 1] == -100:
                continue
            target = torch.softmax(vals[b, t + 1], -1)
            logp = torch.log_softmax(logits[b, t], -1)
            total += -(target * logp[ids[b, t + 1]]).sum().item()
            n += 1
    assert got.item() == pytest.approx(total / n, rel=1e-5)
    # a one-hot soft target is the hard cross-entropy
    onehot_vals = torch.zeros(2, 5, 3)
    onehot_vals[..., 0] = 1e4
    hard_lab = torch.where(lab == -100, lab, ids[..., 0])
    hard = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), hard_lab[:, 1:].reshape(-1))
    assert finetune.soft_cross_entropy(logits, ids, onehot_vals, lab).item() == pytest.approx(hard.item(), rel=1e-4)


def test_soft_targets_with_kl_train_and_record_steps(label_run, tiny_tokenizer):
    data = labels.load(label_run)
    tok = tiny_tokenizer
    retain = torch.tensor(tok("The cat sat on the mat and the dog slept by the fire. " * 8,
                              add_special_tokens=False)["input_ids"][:64]).view(2, 32)
    probes = [probe.TokenProbe("a", "Harry Potter studies", (" magic",), (" the",))]
    steps = finetune.StepProbe(tok, probes, ["The cat sat on the mat."], every=3)
    settings = training.TrainSettings(learning_rate=1e-2, batch_size=4, max_steps=6, lora_r=4, save_steps=100)
    U, losses = finetune.finetune(make_tiny_model(len(tok), seed=4), data, 5.0, label_run, settings,
                                  targets="soft", kl_weight=1.0, retain=retain, out="ft-soft",
                                  callbacks=[steps.callback], resume=False, save_merged=False)
    assert [h["step"] for h in steps.history] == [0, 3, 6]
    assert all(0 <= h["familiarity"] <= 1 and h["perplexity"] > 1 for h in steps.history)
    assert finetune.kl_retain(U, retain).item() > 0
    with pytest.raises(ValueError, match="retain"):
        finetune.make_trainer_class("hard", 1.0, None)
    with pytest.raises(KeyError, match="alpha=7"):
        finetune.finetune(make_tiny_model(len(tok)), data, 7.0, label_run, settings)


def test_kl_is_zero_for_an_untrained_adapter(tiny_tokenizer):
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(make_tiny_model(len(tiny_tokenizer)), LoraConfig(r=4, target_modules=["q_proj"]))
    ids = torch.randint(0, len(tiny_tokenizer), (2, 16))
    assert finetune.kl_retain(model, ids).item() == pytest.approx(0.0, abs=1e-6)
