"""Label-generation throughput, memory and the saving of several alphas in one pass,
in the course's configuration: four alphas, top-32 soft targets, the curated
dictionary, so B reads translated and padded blocks and R the originals.

Measured side by side in one run on the embedded model (R = B + a random LoRA
adapter, so the adapter costs what a trained one costs), with repeats:

* floor: the two forward passes label generation cannot avoid, in the same shape
  (R on the original blocks, B on the translated blocks, right-padded);
  target: label generation (4 alphas) >= 0.85 of the floor's tokens/s;
* several alphas: one pass with 4 alphas against 4 one-alpha passes, all run;
* peak memory (max RSS of a fresh process) at 1x and 4x the corpus; target: flat.

    python benchmarks/labels_throughput.py --blocks 16 --block-size 256 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch
from common import summary
from peft import LoraConfig, get_peft_model

from nbsupport import config, corpus, generic_labels, models, runs
from nbsupport.anchors import dictionary
from nbsupport.pair import ModelPair
from nbsupport.scoring import pad_right

ALPHAS = [5.0, 2.5, 10.0, 0.0]


def setup(n_blocks: int, block_size: int):
    config.set_seed(0)
    model, tok = models.load_model("embedded")
    R = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", init_lora_weights=False)).eval()
    text = corpus.builtin_corpus(tok, max_tokens=n_blocks * block_size + 4000)
    blocks = corpus.make_blocks(text, tok, block_size)[:n_blocks]
    return ModelPair(R), tok, blocks, dictionary.builtin_dictionary()


def timed_generate(pair, tok, blocks, anchor_dict, alphas, batch_size):
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generic_labels.generate(pair, tok, blocks, runs.Run(tmp), anchor_dict, alphas, top_k=32,
                                batch_size=batch_size, progress=False)
        return time.perf_counter() - start


@torch.no_grad()
def floor(pair, tok, blocks, anchor_dict, batch_size):
    """The two unavoidable forward passes, on inputs prepared beforehand (untimed)."""
    translator = dictionary.Translator(anchor_dict)
    translated = [tok(translator.translate(tok.decode(b), seed=i).text, add_special_tokens=False)["input_ids"]
                  for i, b in enumerate(blocks.tolist())]
    batches = [(blocks[lo:lo + batch_size], *pad_right(translated[lo:lo + batch_size], tok.pad_token_id))
               for lo in range(0, len(blocks), batch_size)]
    start = time.perf_counter()
    for orig, trans, mask in batches:
        pair.logits(orig, base_input_ids=trans, base_attention_mask=mask)
    return time.perf_counter() - start


def memory_child(n_blocks, block_size, batch_size):
    pair, tok, blocks, anchor_dict = setup(n_blocks, block_size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timed_generate(pair, tok, blocks, anchor_dict, ALPHAS, batch_size)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"blocks": len(blocks), "peak_mib": after / 1024, "before_mib": before / 1024}))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.block_size, args.batch_size)

    pair, tok, blocks, anchor_dict = setup(args.blocks, args.block_size)
    tokens = blocks.numel()
    floor(pair, tok, blocks[: args.batch_size], anchor_dict, args.batch_size)  # warm-up, untimed
    t_floor, t_four, t_ones = [], [], []
    for r in range(args.repeats):
        runs_in_order = [("floor", lambda: floor(pair, tok, blocks, anchor_dict, args.batch_size)),
                         ("four", lambda: timed_generate(pair, tok, blocks, anchor_dict, ALPHAS, args.batch_size))]
        for name, fn in (runs_in_order if r % 2 == 0 else runs_in_order[::-1]):
            (t_floor if name == "floor" else t_four).append(fn())
        t_ones.append(sum(timed_generate(pair, tok, blocks, anchor_dict, [a], args.batch_size) for a in ALPHAS))
    ratios = [f / g for f, g in zip(t_floor, t_four)]
    savings = [1 - g / o for g, o in zip(t_four, t_ones)]
    print(f"{len(blocks)} blocks x {args.block_size} tokens = {tokens} tokens, batch {args.batch_size}, "
          f"{args.repeats} repeats, torch threads {torch.get_num_threads()}")
    print(f"floor: R on originals + B on translations, tokens/s : {summary([tokens / t for t in t_floor])}")
    print(f"labels, 4 alphas + top-32 in one pass, tokens/s      : {summary([tokens / t for t in t_four])}")
    print(f"ratio labels/floor: {summary(ratios, 3)}  target >= 0.85")
    print(f"4 one-alpha passes, all run: {summary(t_ones)} s; one 4-alpha pass: {summary(t_four)} s; "
          f"saving {summary([100 * x for x in savings], 0)} %")
    for n in (args.blocks, 4 * args.blocks):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n), "--block-size",
                              str(args.block_size), "--batch-size", str(args.batch_size)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        m = json.loads(out)
        print(f"peak RSS with {m['blocks']:4d} blocks: {m['peak_mib']:7.0f} MiB (after loading: {m['before_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
