#!/usr/bin/env python3
"""Exports the bench's BERT encoders to ONNX for the ONNX Runtime peer (ort_peer.mjs), with
torch.onnx.export from Debian's python3-torch on the same config.json + model.safetensors and the
same formulas as the eager peer (eager_bert.forward). Bench tool only.

    export_onnx.py MODEL_DIR OUT.onnx --task embed    input_ids, attention_mask -> sentence_embedding
                                                      (mean pooling + L2 normalisation, all-MiniLM)
    export_onnx.py MODEL_DIR OUT.onnx --task rerank   input_ids, token_type_ids, attention_mask ->
                                                      scores (classifier + sigmoid, ms-marco CrossEncoder)

Batch and sequence axes are dynamic. Prints the output of one check batch next to eager's.
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F

from eager_bert import forward
from eager import load_safetensors


class Embed(torch.nn.Module):
    def __init__(self, c, w):
        super().__init__()
        self.c, self.w = c, w

    def forward(self, ids, mask):
        tokens, _ = forward(self.c, self.w, ids, mask)
        m = mask.unsqueeze(-1).float()
        return F.normalize((tokens * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1)


class Rerank(torch.nn.Module):
    def __init__(self, c, w):
        super().__init__()
        self.c, self.w = c, w

    def forward(self, ids, types, mask):
        _, pooled = forward(self.c, self.w, ids, mask, types)
        return torch.sigmoid(F.linear(pooled, self.w["classifier.weight"], self.w["classifier.bias"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--task", choices=["embed", "rerank"], required=True)
    args = ap.parse_args()
    c = json.load(open(os.path.join(args.model, "config.json")))
    w = {k.removeprefix("bert."): v for k, v in load_safetensors(os.path.join(args.model, "model.safetensors")).items()}
    ids = torch.tensor([[101, 7592, 2088, 1012, 102, 0], [101, 2023, 2003, 1037, 3231, 102]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    axes = {0: "batch", 1: "sequence"}
    if args.task == "embed":
        model, inputs, names, output = Embed(c, w), (ids, mask), ["input_ids", "attention_mask"], "sentence_embedding"
    else:
        types = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1]])
        model, inputs = Rerank(c, w), (ids, types, mask)
        names, output = ["input_ids", "token_type_ids", "attention_mask"], "scores"
    with torch.inference_mode():
        check = model(*inputs)
    torch.onnx.export(model, inputs, args.out, input_names=names, output_names=[output], opset_version=14,
                      dynamic_axes={**{n: axes for n in names}, output: {0: "batch"}})
    print(json.dumps({"onnx": args.out, "check_ids": ids.tolist(), "eager": [row[:4] for row in check.tolist()]}))


if __name__ == "__main__":
    main()
