"""Reinforcement throughput against a plain forward+backward loop.

Both sides train a fresh LoRA adapter on the same model, the same blocks and the
same batch size for the same number of optimizer steps, in one process, one after
the other. Target: nbsupport's loop (the transformers Trainer) >= 0.9 of the plain loop.

    python benchmarks/reinforce_throughput.py --steps 8 --batch-size 4 --block-size 256
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from nbsupport import config, corpus, models
from nbsupport.training import BlockDataset, TrainSettings, attach_lora, train


def plain_loop(model, blocks, settings):
    model = attach_lora(model, settings)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    start = time.perf_counter()
    for step in range(settings.max_steps):
        lo = (step * settings.batch_size) % len(blocks)
        batch = blocks[lo:lo + settings.batch_size]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    seconds = time.perf_counter() - start
    model.unload()  # remove the adapter: the next side starts from the same base
    return seconds


def ours(model, blocks, settings):
    model = attach_lora(model, settings)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(model, BlockDataset(blocks), tmp, settings, resume=False, progress=False)
        seconds = time.perf_counter() - start
    model.unload()
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=256)
    args = ap.parse_args()
    config.set_seed(0)
    model, tok = models.load_model(args.model)
    text = corpus.builtin_corpus(tok, max_tokens=args.steps * args.batch_size * args.block_size + 2000)
    blocks = corpus.make_blocks(text, tok, args.block_size)[: args.steps * args.batch_size]
    settings = TrainSettings(batch_size=args.batch_size, max_steps=args.steps, save_steps=10**6,
                             logging_steps=10**6)
    tokens = args.steps * args.batch_size * args.block_size
    # One untimed forward+backward first, so neither side pays the allocator's warm-up.
    model(input_ids=blocks[: args.batch_size], labels=blocks[: args.batch_size]).loss.backward()
    model.zero_grad(set_to_none=True)
    plain = plain_loop(model, blocks, settings)
    mine = ours(model, blocks, settings)
    print(f"model {args.model}, {args.steps} steps x batch {args.batch_size} x {args.block_size} tokens "
          f"= {tokens} tokens per side, torch threads {torch.get_num_threads()}")
    print(f"plain forward+backward loop : {tokens / plain:8.1f} tokens/s ({plain:.1f} s)")
    print(f"nbsupport (Trainer)         : {tokens / mine:8.1f} tokens/s ({mine:.1f} s)")
    print(f"ratio                       : {plain / mine:8.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
