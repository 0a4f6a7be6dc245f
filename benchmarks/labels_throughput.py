"""Label-generation throughput, memory and the saving of several alphas in one pass.

Measured side by side in one run on the embedded model (R = B + a random LoRA
adapter, so the adapter costs what a trained one costs):

* floor: two plain batched forward passes (R on the blocks, B on the blocks);
  target: label generation >= 0.85 of the floor's tokens/s;
* several alphas: one pass with 4 alphas against 4 one-alpha passes;
* peak memory (max RSS of a fresh process) at 1x and 4x the corpus; target: flat.

    python benchmarks/labels_throughput.py --blocks 16 --block-size 256
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


def setup(n_blocks: int, block_size: int):
    from peft import LoraConfig, get_peft_model

    from nbsupport import anchors, config, corpus, models
    config.set_seed(0)
    model, tok = models.load_model("embedded")
    R = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", init_lora_weights=False)).eval()
    text = corpus.builtin_corpus(tok, max_tokens=n_blocks * block_size + 4000)
    blocks = corpus.make_blocks(text, tok, block_size)[:n_blocks]
    return R, tok, blocks, anchors.builtin_dictionary()


def timed_generate(R, tok, blocks, dictionary, alphas, batch_size):
    from nbsupport import labels, runs
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        labels.generate(R, tok, blocks, runs.Run(tmp), dictionary, alphas, top_k=32,
                        batch_size=batch_size, progress=False)
        return time.perf_counter() - start


@torch.no_grad()
def floor(R, blocks, batch_size):
    start = time.perf_counter()
    for lo in range(0, len(blocks), batch_size):
        batch = blocks[lo:lo + batch_size]
        R(input_ids=batch)
        with R.disable_adapter():
            R(input_ids=batch)
    return time.perf_counter() - start


def memory_child(n_blocks, block_size, batch_size):
    R, tok, blocks, dictionary = setup(n_blocks, block_size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timed_generate(R, tok, blocks, dictionary, [5.0, 2.5, 10.0, 0.0], batch_size)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"blocks": len(blocks), "peak_mib": after / 1024, "before_mib": before / 1024}))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.block_size, args.batch_size)

    R, tok, blocks, dictionary = setup(args.blocks, args.block_size)
    tokens = blocks.numel()
    floor(R, blocks[: args.batch_size], args.batch_size)  # warm-up, untimed
    t_floor = floor(R, blocks, args.batch_size)
    t_one = timed_generate(R, tok, blocks, dictionary, [5.0], args.batch_size)
    t_four = timed_generate(R, tok, blocks, dictionary, [5.0, 2.5, 10.0, 0.0], args.batch_size)
    print(f"{len(blocks)} blocks x {args.block_size} tokens = {tokens} tokens, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"floor: two plain forward passes  : {tokens / t_floor:7.1f} tokens/s ({t_floor:.1f} s)")
    print(f"labels, 1 alpha (+top-32 kept)   : {tokens / t_one:7.1f} tokens/s ({t_one:.1f} s)  "
          f"ratio to floor {t_floor / t_one:.3f} (target >= 0.85)")
    print(f"labels, 4 alphas in one pass     : {tokens / t_four:7.1f} tokens/s ({t_four:.1f} s)  "
          f"vs 4 one-alpha passes ~{4 * t_one:.1f} s: saving {1 - t_four / (4 * t_one):.0%}")
    for n in (args.blocks, 4 * args.blocks):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n), "--block-size",
                              str(args.block_size), "--batch-size", str(args.batch_size)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        m = json.loads(out)
        print(f"peak RSS with {m['blocks']:4d} blocks      : {m['peak_mib']:7.0f} MiB "
              f"(after loading: {m['before_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
