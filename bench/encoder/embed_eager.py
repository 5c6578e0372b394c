#!/usr/bin/env python3
"""PyTorch eager peer for `encoder_bench embed`: what sentence-transformers does with an
all-MiniLM-style model (batches in its order, each padded to its longest, BERT forward, mean pooling,
L2 normalisation), on the token ids the C++ side dumped (--dump-ids): model time only, tokenization
excluded (Python's `tokenizers` is not installed here). Bench tool only.

    embed_eager.py MODEL_DIR --ids ids.json --threads 2

Prints one JSON line: sentences, seconds, sentences_per_s.
"""
import json
import time

import torch
import torch.nn.functional as F

from eager_bert import forward, peer_setup


def main():
    args, c, w = peer_setup()
    batches = []
    for batch in json.load(open(args.ids)):
        longest = max(len(ids) for ids in batch)
        ids = torch.zeros(len(batch), longest, dtype=torch.long)
        mask = torch.zeros(len(batch), longest, dtype=torch.long)
        for r, row in enumerate(batch):
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
        batches.append((ids, mask))
    sentences = sum(b[0].shape[0] for b in batches)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(args.repeat):
            start = time.perf_counter()
            for ids, mask in batches:
                tokens, _ = forward(c, w, ids, mask)
                m = mask.unsqueeze(-1).float()
                F.normalize((tokens * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1)
            best = min(best, time.perf_counter() - start)
    print(json.dumps({"engine": "pytorch-eager", "sentences": sentences, "seconds": best,
                      "sentences_per_s": sentences / best}))


if __name__ == "__main__":
    main()
