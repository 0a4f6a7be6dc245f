"""Where the forgetting signal lives (label_signal): one row per trained position,
its numbers against a direct computation, and the sums by kind and by prefix."""
import pytest
import torch

from conftest import make_tiny_pair
from nbsupport import corpus, generic_labels as labels, label_signal, runs
from nbsupport.anchors.dictionary import AnchorDict, Entry

DICT = AnchorDict([Entry("Hogwarts", ["the big old school"]), Entry("Harry", ["Jon"])])
TEXT = ("Harry Potter studies magic at Hogwarts. Harry and the owl fly at night.\nThe owl flew over "
        "the castle and the cat slept. ") * 6


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_tokenizer):
    tok = tiny_tokenizer
    run = runs.Run(tmp_path_factory.mktemp("signal"))
    blocks = corpus.make_blocks(TEXT, tok, 32)
    pair = make_tiny_pair(len(tok), seed=4)
    labels.generate(pair, tok, blocks, run, DICT, [5.0], top_k=8, progress=False)
    data = labels.load(run)
    anchor_ids = labels.anchor_token_ids(tok, DICT)
    return pair, data, anchor_ids, label_signal.position_signal(pair, data, 5.0, anchor_ids, batch_size=3,
                                                                progress=False)


def test_one_row_per_trained_position_with_its_numbers(made):
    pair, data, anchor_ids, table = made
    hard = data.labels(5.0)
    assert len(table) == int((hard[:, 1:] != labels.IGNORE).sum())
    ids, vals = data.soft(5.0)
    for _, row in table.sample(6, random_state=0).iterrows():
        i, t = int(row.block), int(row.position)
        v_b, v_r = pair.logits(data.input_ids[i:i + 1])
        logp_b, logp_r = torch.log_softmax(v_b[0, t - 1], -1), torch.log_softmax(v_r[0, t - 1], -1)
        token = int(data.input_ids[i, t])
        assert row.raised == pytest.approx(float(logp_r[token] - logp_b[token]), abs=1e-4)
        assert row.top1_changed == (int(hard[i, t]) != int(logp_b.argmax()))
        assert row.label_is_text == (int(hard[i, t]) == token)
        q = torch.softmax(vals[i, t].float(), -1)
        own = torch.softmax(v_b[0, t - 1].topk(ids.shape[-1]).values, -1)
        own_ids = v_b[0, t - 1].topk(ids.shape[-1]).indices
        by_hand = float((q * (q.log() - logp_b[ids[i, t].long()])).sum() - (own * (own.log() - logp_b[own_ids])).sum())
        assert row.divergence == pytest.approx(by_hand, abs=1e-4)
        want = ("anchor" if token in anchor_ids else
                "raised by R" if row.raised > label_signal.RAISED_NATS else "prose")
        assert row.kind == want
    assert set(table.kind) >= {"anchor", "prose"}


def test_the_sums_by_kind_and_by_prefix(made):
    *_, table = made
    summary = label_signal.signal_table(table, threshold=0.1)
    kinds = [k for k in label_signal.KINDS if k in summary.index]
    assert summary.loc[kinds, "positions"].sum() == summary.loc["all", "positions"] == len(table)
    assert summary.loc[kinds, "% of the signal"].sum() == pytest.approx(100.0)
    assert summary.loc["all", "% above"] == pytest.approx(100 * (table.divergence > 0.1).mean())
    anchor = table[table.kind == "anchor"]
    assert summary.loc["anchor", "top-1 changed %"] == pytest.approx(100 * anchor.top1_changed.mean())
    prefix = label_signal.by_prefix(table, [1, 2, 100], block_size=32)
    assert list(prefix.blocks) == [1, 2, 100] and list(prefix.tokens) == [32, 64, 3200]
    first = table[table.block < 1]
    assert prefix.loc[0, "mean divergence"] == pytest.approx(first.divergence.mean())
    with pytest.raises(ValueError, match="no positions"):
        label_signal.signal_table(table.iloc[:0])
