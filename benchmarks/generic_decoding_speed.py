"""Speed of inference-time WHP (nbsupport.generic_decoding) against plain generation.

Measured side by side in one run, same prompts, same batch, same number of new
tokens (EOS ignored so every run makes exactly that many):

* one model: ``generate`` of B alone (transformers, KV cache, greedy);
* WHP, cached: ``generic_decoding.decode`` (B and R each with a KV cache; with a LoRA
  R both in ONE stacked forward per step, R's LoRA applied to its half of the rows by
  slicing; ``--peft-rows`` also times PEFT's mixed-adapter batch for that). Goal: time per token <= 1.6x one model's
  at 128 new tokens;
* WHP, no cache: the whole prefix through B and through R at every step (MUSE's way),
  the reference. Its cost grows with the square of the length, so it is measured at
  the lengths of ``--nocache-tokens`` (on a small CPU, 128 takes minutes per run).

By default B is the embedded model and R = B + a LoRA adapter with random non-zero
weights (it costs what a trained one costs); ``--adapter DIR`` uses a real one.

    python benchmarks/generic_decoding_speed.py --batch 4 --new-tokens 128 512 --repeats 3
    python benchmarks/generic_decoding_speed.py --tiny          # a quick smoke test

On a small shared CPU, ``--threads 1`` gives steadier numbers, and ``--nocache-tokens 16 32``
keeps the reference to a couple of minutes (then compare its growth 16 -> 32 with
the cached decoder's).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

PROMPTS = ["Harry Potter's two best friends are", "The scar on his", "Once upon a time, in a quiet",
           "The recipe calls for two cups of", "In the morning the castle", "My favourite book is"]


def tiny_models():
    """A random 2-layer Llama over the embedded tokenizer, for a smoke run."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from nbsupport import models
    tok = AutoTokenizer.from_pretrained(str(models.prepare_embedded()))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    return LlamaForCausalLM(cfg).eval(), tok


def setup(args):
    """``(pair, tok, input_ids [b, L], attention_mask [b, L])`` with left-padded prompts."""
    from peft import LoraConfig, get_peft_model

    from nbsupport import models
    from nbsupport.pair import ModelPair
    if args.tiny:
        model, tok = tiny_models()
    elif args.adapter:
        model, tok = models.load_model("embedded", adapter=args.adapter, device="cpu")
    else:
        model, tok = models.load_model("embedded", device="cpu")
    if args.tiny or not args.adapter:
        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(init_lora_weights=False, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    enc = tok(prompts, return_tensors="pt", padding=True)
    return ModelPair(model), tok, enc["input_ids"], enc["attention_mask"]


# ----------------------------------------------------------------- the methods, one run each
def one_model(pair, tok, ids, mask, n):
    with pair.base() as B:
        out = B.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids.shape[1] + n


def whp(pair, ids, mask, n, **kw):
    from nbsupport import generic_decoding as gd
    out = gd.decode(pair, ids, mask, alpha=5.0, max_new_tokens=n, eos_token_id=None, **kw)
    assert out.new_tokens.shape[1] == n


def methods(pair, tok, args):
    """name -> run(ids, mask, n)."""
    table = {"one model (generate)": lambda i, m, n: one_model(pair, tok, i, m, n),
             "WHP cached": lambda i, m, n: whp(pair, i, m, n)}
    if args.peft_rows:
        table["WHP cached, PEFT rows"] = lambda i, m, n: whp(pair, i, m, n, rows="peft")
    if args.two_forwards:
        table["WHP cached, 2 forwards"] = lambda i, m, n: whp(pair, i, m, n, stack=False)
    table["WHP no cache (reference)"] = lambda i, m, n: whp(pair, i, m, n, use_cache=False, stack=False)
    return table


def measure(table, ids, mask, plan, repeats):
    """{(name, n): [(wall seconds, CPU seconds) per run]}. The methods' order alternates
    between repeats, so that a slow spell of a shared machine does not fall on one
    method only; CPU time (this process only) is steadier than wall time there."""
    times = {key: [] for key in plan}
    for rep in range(repeats):
        order = plan if rep % 2 == 0 else plan[::-1]
        for name, n in order:
            wall, cpu = time.perf_counter(), time.process_time()
            table[name](ids, mask, n)
            times[(name, n)].append((time.perf_counter() - wall, time.process_time() - cpu))
            print(f"  repeat {rep + 1}: {name:26s} {n:4d} tokens  wall {times[(name, n)][-1][0]:7.2f} s"
                  f"  cpu {times[(name, n)][-1][1]:7.2f} s", flush=True)
    return times


# ----------------------------------------------------------------- report
def spread(values):
    return f"{statistics.median(values):9.1f} [{min(values):7.1f} - {max(values):7.1f}]"


def report(times, batch):
    wall = {key: statistics.median(t for t, _ in ts) for key, ts in times.items()}
    cpu = {key: statistics.median(c for _, c in ts) for key, ts in times.items()}
    print(f"\n{'method':26s} {'new':>4s}  {'tokens/s wall: median [min - max]':>34s}  "
          f"{'tokens/s CPU: median [min - max]':>33s}")
    for (name, n), ts in times.items():
        print(f"{name:26s} {n:4d}  {spread([batch * n / t for t, _ in ts]):>34s}  "
              f"{spread([batch * n / c for _, c in ts]):>33s}")
    print()
    for n in sorted({n for _, n in wall}):
        one, generic = ("one model (generate)", n), ("WHP cached", n)
        if one in wall and generic in wall:
            goal = "   (goal <= 1.6)" if n == 128 else ""
            print(f"time per token, WHP cached / one model, {n:4d} new tokens: "
                  f"wall {wall[generic] / wall[one]:5.2f}  CPU {cpu[generic] / cpu[one]:5.2f}{goal}")
    for name in dict.fromkeys(name for name, _ in wall):
        ns = sorted(n for nm, n in wall if nm == name)
        for lo, hi in zip(ns, ns[1:]):
            print(f"growth {lo:3d} -> {hi:3d} tokens, {name:26s}: "
                  f"wall x{wall[(name, hi)] / wall[(name, lo)]:5.2f}"
                  f"  CPU x{cpu[(name, hi)] / cpu[(name, lo)]:5.2f}  (linear x{hi / lo:.0f}, "
                  f"quadratic up to x{(hi / lo) ** 2:.0f})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--nocache-tokens", type=int, nargs="*", default=[128],
                    help="lengths for the no-cache reference (none: skip it)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--adapter", help="a PEFT adapter directory for R (default: random LoRA)")
    ap.add_argument("--two-forwards", action="store_true",
                    help="also time cached WHP with B and R in two forwards (no stacking; a LoRA "
                         "adapter is then switched off and on at every step)")
    ap.add_argument("--peft-rows", action="store_true",
                    help="also time cached WHP with R's rows chosen by PEFT's mixed-adapter batch "
                         "(index lists) instead of slicing")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 is steadier on a machine shared with other jobs)")
    ap.add_argument("--tiny", action="store_true", help="a tiny random model: a quick smoke run")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.tiny:
        args.new_tokens, args.nocache_tokens, args.repeats = [16, 32], [16, 32], min(args.repeats, 3)
    if args.threads:
        torch.set_num_threads(args.threads)

    pair, tok, ids, mask = setup(args)
    table = methods(pair, tok, args)
    cached = [name for name in table if "no cache" not in name]
    plan = [(name, n) for n in args.new_tokens for name in cached]
    plan += [("WHP cached", n) for n in args.nocache_tokens if n not in args.new_tokens]
    plan += [("WHP no cache (reference)", n) for n in args.nocache_tokens]
    what = "tiny random Llama" if args.tiny else "embedded model"
    print(f"{what}, R = B + {'adapter ' + args.adapter if args.adapter else 'random LoRA'}; "
          f"batch {args.batch}, prompt widths {ids.shape[1]} (left-padded), torch threads "
          f"{torch.get_num_threads()}, device cpu, repeats {args.repeats}")
    for name in table:                                   # warm-up, untimed
        table[name](ids, mask, 2)
    times = measure(table, ids, mask, plan, args.repeats)
    report(times, args.batch)


if __name__ == "__main__":
    main()
