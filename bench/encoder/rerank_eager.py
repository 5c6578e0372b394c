#!/usr/bin/env python3
"""PyTorch eager peer for `encoder_bench rerank`: what sentence-transformers' CrossEncoder.predict
does with an ms-marco-MiniLM-style BertForSequenceClassification (one call per query, its pairs in
sentence-transformers' batches, each padded to its longest, BERT forward, pooler, classifier,
sigmoid), on the token ids the C++ side dumped (--dump-ids): model time only, tokenization excluded
(Python's `tokenizers` is not installed here). Bench tool only.

    rerank_eager.py MODEL_DIR --ids ce_ids.json --threads 2

Prints one JSON line: pairs, seconds, pairs_per_s.
"""
import json
import time

import torch
import torch.nn.functional as F

from eager_bert import forward, peer_setup


def main():
    args, c, w = peer_setup()
    calls = []
    for call in json.load(open(args.ids)):
        batches = []
        for batch in call:
            longest = max(len(row["ids"]) for row in batch)
            ids = torch.zeros(len(batch), longest, dtype=torch.long)
            types = torch.zeros(len(batch), longest, dtype=torch.long)
            mask = torch.zeros(len(batch), longest, dtype=torch.long)
            for r, row in enumerate(batch):
                ids[r, :len(row["ids"])] = torch.tensor(row["ids"])
                types[r, :len(row["types"])] = torch.tensor(row["types"])
                mask[r, :len(row["ids"])] = 1
            batches.append((ids, types, mask))
        calls.append(batches)
    pairs = sum(b[0].shape[0] for call in calls for b in call)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(args.repeat):
            start = time.perf_counter()
            for call in calls:
                for ids, types, mask in call:
                    _, pooled = forward(c, w, ids, mask, types)
                    torch.sigmoid(F.linear(pooled, w["classifier.weight"], w["classifier.bias"]))
            best = min(best, time.perf_counter() - start)
    print(json.dumps({"engine": "pytorch-eager", "pairs": pairs, "seconds": best, "pairs_per_s": pairs / best}))


if __name__ == "__main__":
    main()
