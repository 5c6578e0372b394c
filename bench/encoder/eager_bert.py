#!/usr/bin/env python3
"""PyTorch eager peer for bench/encoder: BertModel written with plain torch ops the way
transformers' eager BERT computes it (F.linear, additive mask, fp32 softmax, erf GELU,
post-LayerNorm, tanh pooler), on the same config.json + model.safetensors. Bench tool only.
Run with Debian's /usr/bin/python3 (python3-torch).

    eager_bert.py MODEL_DIR --dtype float32 --batch 8 --seq 128 --threads 2 --repeat 10

Prints one JSON line: ms (best forward), gflops.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "generation"))
from eager import load_safetensors  # noqa: E402


def forward(c, w, ids, mask, types=None):
    h, nh = c["hidden_size"], c["num_attention_heads"]
    b, n = ids.shape
    eps = c.get("layer_norm_eps", 1e-12)
    x = (F.embedding(ids, w["embeddings.word_embeddings.weight"]) +
         F.embedding(torch.arange(n), w["embeddings.position_embeddings.weight"]) +
         F.embedding(torch.zeros_like(ids) if types is None else types, w["embeddings.token_type_embeddings.weight"]))
    x = F.layer_norm(x, (h,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    ext = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
    for i in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        def heads(t):
            return t.view(b, n, nh, -1).transpose(1, 2)
        q = heads(F.linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"]))
        k = heads(F.linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"]))
        v = heads(F.linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"]))
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(h // nh) + ext
        a = torch.matmul(torch.softmax(s.float(), -1).to(q.dtype), v).transpose(1, 2).reshape(b, n, h)
        a = F.linear(a, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])
        x = F.layer_norm(a + x, (h,), w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        f = F.gelu(F.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
        f = F.linear(f, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
        x = F.layer_norm(f + x, (h,), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    pooled = torch.tanh(F.linear(x[:, 0], w["pooler.dense.weight"], w["pooler.dense.bias"]))
    return x, pooled


def peer_setup():
    """The command line of the peers on dumped token ids (MODEL_DIR --ids FILE [--threads N]
    [--repeat R]): the arguments, config.json and the weights, names without the "bert." prefix of
    BertFor* checkpoints. Sets torch's thread count."""
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    c = json.load(open(os.path.join(args.model, "config.json")))
    w = {k.removeprefix("bert."): v for k, v in load_safetensors(os.path.join(args.model, "model.safetensors")).items()}
    return args, c, w


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    c = json.load(open(os.path.join(args.model, "config.json")))
    dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
    w = {k: v.to(dtype) for k, v in load_safetensors(os.path.join(args.model, "model.safetensors")).items()}
    ids = torch.randint(0, c["vocab_size"], (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    best = float("inf")
    with torch.inference_mode():
        forward(c, w, ids, mask)
        for _ in range(args.repeat):
            t = time.perf_counter()
            forward(c, w, ids, mask)
            best = min(best, time.perf_counter() - t)
    h, ff, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    tokens = args.batch * args.seq
    flops = L * tokens * (8 * h * h + 4 * h * ff + 4 * args.seq * h) + args.batch * 2 * h * h
    print(json.dumps({"engine": "pytorch-eager", "dtype": args.dtype, "batch": args.batch, "seq": args.seq,
                      "ms": best * 1e3, "gflops": flops / best / 1e9}))


if __name__ == "__main__":
    main()
