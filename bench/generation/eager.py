#!/usr/bin/env python3
"""PyTorch eager peer for bench/generation: GPT-2, Llama (also Qwen2's and Gemma 2's variants) and T5 written with plain torch ops the
way transformers' eager code computes them (F.linear, a growing KV cache, fp32 softmax), on
the same config.json + model.safetensors that plugformer loads. For T5 the prompt goes to the
encoder (run once) and decoding starts from decoder_start_token_id with self- and
cross-attention caches. Bench tool only: the project
never needs Python. Run with Debian's /usr/bin/python3 (python3-torch).

    eager.py MODEL_DIR --dtype float32 --batch 1 --prompt 512 --new 128 --threads 2

Prints one JSON line: prefill_tokens_per_s, decode_tokens_per_s (all rows), ttft_ms.
"""
import argparse
import json
import math
import os
import struct
import time

import torch
import torch.nn.functional as F

ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64}


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(data[a:b], dtype=ST_DTYPES[info["dtype"]]) if b > a else torch.empty(0)
        out[name] = t.view(info["shape"]).clone()
    return out


class Gpt2:
    def __init__(self, cfg, w, dtype):
        self.c = cfg
        self.w = {k: v.to(dtype) for k, v in w.items()}
        if "lm_head.weight" not in self.w:
            self.w["lm_head.weight"] = self.w["transformer.wte.weight"]
        # Conv1D stores [in, out]: F.linear wants [out, in] (transformers' Conv1D uses addmm on the
        # [in, out] weight; the transposed view gives the same product).
        for k in list(self.w):
            if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
                self.w[k] = self.w[k].t()

    def forward(self, ids, cache):
        c, w = self.c, self.w
        past = cache[0][0].shape[2] if cache else 0
        pos = torch.arange(past, past + ids.shape[1])
        h = F.embedding(ids, w["transformer.wte.weight"]) + F.embedding(pos, w["transformer.wpe.weight"])
        nh, hd = c["n_head"], c["n_embd"] // c["n_head"]
        new_cache = []
        for i in range(c["n_layer"]):
            p = f"transformer.h.{i}."
            x = F.layer_norm(h, (c["n_embd"],), w[p + "ln_1.weight"], w[p + "ln_1.bias"], c["layer_norm_epsilon"])
            q, k, v = F.linear(x, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]).split(c["n_embd"], -1)
            q, k, v = [t.view(t.shape[0], t.shape[1], nh, hd).transpose(1, 2) for t in (q, k, v)]
            if cache:
                k = torch.cat([cache[i][0], k], 2)
                v = torch.cat([cache[i][1], v], 2)
            new_cache.append((k, v))
            s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd)
            if q.shape[2] > 1:
                causal = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril(k.shape[2] - q.shape[2])
                s = s.masked_fill(~causal, torch.finfo(s.dtype).min)
            a = torch.matmul(F.softmax(s, -1, dtype=torch.float32).to(q.dtype), v)
            a = a.transpose(1, 2).reshape(h.shape)
            h = h + F.linear(a, w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"])
            x = F.layer_norm(h, (c["n_embd"],), w[p + "ln_2.weight"], w[p + "ln_2.bias"], c["layer_norm_epsilon"])
            x = F.gelu(F.linear(x, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]), approximate="tanh")
            h = h + F.linear(x, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
        h = F.layer_norm(h, (c["n_embd"],), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"],
                         c["layer_norm_epsilon"])
        return F.linear(h[:, -1:], w["lm_head.weight"]).float(), new_cache


class Decoder:
    """Llama and the families on its decoder as transformers' eager code computes them: Qwen2's q/k/v
    biases, Gemma 2's (1 + w) norms, embedding scale, sandwich norms, query_pre_attn_scalar,
    soft-capped scores and logits and sliding windows on even layers."""

    def __init__(self, cfg, w, dtype):
        self.c = cfg
        self.w = {k: v.to(dtype) for k, v in w.items()}
        if "lm_head.weight" not in self.w:
            self.w["lm_head.weight"] = self.w["model.embed_tokens.weight"]
        self.gemma2 = cfg["model_type"] == "gemma2"
        self.hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        self.inv_freq = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, self.hd, 2).float() / self.hd))
        self.scale = cfg["query_pre_attn_scalar"] ** -0.5 if self.gemma2 else self.hd ** -0.5
        self.act = (lambda x: F.gelu(x, approximate="tanh")) if self.gemma2 else F.silu
        n = cfg["num_hidden_layers"]
        self.windows = [cfg.get("sliding_window") if self.gemma2 and i % 2 == 0 else None for i in range(n)]

    def rms(self, x, weight):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.c["rms_norm_eps"])
        if self.gemma2:
            return (h * (1.0 + weight.float())).to(x.dtype)
        return weight * h.to(x.dtype)

    @staticmethod
    def rotate_half(x):
        x1, x2 = x.chunk(2, -1)
        return torch.cat((-x2, x1), -1)

    def linear(self, x, name):
        return F.linear(x, self.w[name + ".weight"], self.w.get(name + ".bias"))

    def forward(self, ids, cache):
        c, w = self.c, self.w
        past = cache[0][2] if cache else 0
        b, n = ids.shape
        pos = torch.arange(past, past + n).float()
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), -1)
        h = F.embedding(ids, w["model.embed_tokens.weight"])
        if self.gemma2:
            h = h * torch.tensor(c["hidden_size"] ** 0.5, dtype=h.dtype)
        cos, sin = emb.cos().to(h.dtype), emb.sin().to(h.dtype)
        nh, kvh, hd = c["num_attention_heads"], c["num_key_value_heads"], self.hd
        new_cache = []
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            x = self.rms(h, w[p + "input_layernorm.weight"])
            q = self.linear(x, p + "self_attn.q_proj").view(b, n, nh, hd).transpose(1, 2)
            k = self.linear(x, p + "self_attn.k_proj").view(b, n, kvh, hd).transpose(1, 2)
            v = self.linear(x, p + "self_attn.v_proj").view(b, n, kvh, hd).transpose(1, 2)
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
            if cache:
                k = torch.cat([cache[i][0], k], 2)
                v = torch.cat([cache[i][1], v], 2)
            window = self.windows[i]
            # A windowed layer's cache keeps its last window - 1 keys (Gemma 2's hybrid cache).
            new_cache.append((k[:, :, -(window - 1):] if window else k, v[:, :, -(window - 1):] if window else v,
                              past + n))
            kk, vv = k.repeat_interleave(nh // kvh, 1), v.repeat_interleave(nh // kvh, 1)
            s = torch.matmul(q, kk.transpose(-1, -2)) * self.scale
            if c.get("attn_logit_softcapping"):
                cap = c["attn_logit_softcapping"]
                s = torch.tanh(s / cap) * cap
            if n > 1 or window:
                qpos = torch.arange(kk.shape[2] - n, kk.shape[2]).view(-1, 1)
                kpos = torch.arange(kk.shape[2]).view(1, -1)
                blocked = kpos > qpos
                if window:
                    blocked |= kpos <= qpos - window
                s = s.masked_fill(blocked, torch.finfo(s.dtype).min)
            a = torch.matmul(F.softmax(s, -1, dtype=torch.float32).to(q.dtype), vv)
            a = self.linear(a.transpose(1, 2).reshape(b, n, -1), p + "self_attn.o_proj")
            if self.gemma2:
                h = h + self.rms(a, w[p + "post_attention_layernorm.weight"])
                x = self.rms(h, w[p + "pre_feedforward_layernorm.weight"])
            else:
                h = h + a
                x = self.rms(h, w[p + "post_attention_layernorm.weight"])
            x = self.act(self.linear(x, p + "mlp.gate_proj")) * self.linear(x, p + "mlp.up_proj")
            x = self.linear(x, p + "mlp.down_proj")
            h = h + (self.rms(x, w[p + "post_feedforward_layernorm.weight"]) if self.gemma2 else x)
        h = self.rms(h, w["model.norm.weight"])
        logits = F.linear(h[:, -1:], w["lm_head.weight"])
        if c.get("final_logit_softcapping"):
            cap = c["final_logit_softcapping"]
            logits = torch.tanh(logits / cap) * cap
        return logits.float(), new_cache


class T5:
    def __init__(self, cfg, w, dtype):
        self.c = cfg
        self.w = {k: v.to(dtype) for k, v in w.items()}
        if "lm_head.weight" not in self.w:
            self.w["lm_head.weight"] = self.w["shared.weight"]
        self.tied = cfg.get("tie_word_embeddings", True)
        self.gated = cfg.get("feed_forward_proj", "relu").startswith("gated")

    def rms(self, x, weight):
        v = x.float().pow(2).mean(-1, keepdim=True)
        return weight * (x.float() * torch.rsqrt(v + self.c["layer_norm_epsilon"])).to(x.dtype)

    def bias(self, stack, q_pos, k_len, bidirectional):
        c = self.c
        rel = torch.arange(k_len)[None, :] - q_pos[:, None]
        n, md, buckets = c["relative_attention_num_buckets"], c["relative_attention_max_distance"], 0
        if bidirectional:
            n //= 2
            buckets = (rel > 0).long() * n
            rel = rel.abs()
        else:
            rel = -torch.clamp(rel, max=0)
        exact = n // 2
        large = exact + (torch.log(rel.float() / exact) / math.log(md / exact) * (n - exact)).long()
        buckets = buckets + torch.where(rel < exact, rel, torch.clamp(large, max=n - 1))
        table = self.w[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        return F.embedding(buckets, table).permute(2, 0, 1).unsqueeze(0)

    def attend(self, p, x, kv, bias, cache, key):
        w, nh = self.w, self.c["num_heads"]
        b, n, _ = x.shape
        q = F.linear(x, w[p + "q.weight"]).view(b, n, nh, -1).transpose(1, 2)
        if key in cache and kv is not None:  # cross-attention keys/values of the encoder output
            k, v = cache[key]
        else:
            src = x if kv is None else kv
            k = F.linear(src, w[p + "k.weight"]).view(b, src.shape[1], nh, -1).transpose(1, 2)
            v = F.linear(src, w[p + "v.weight"]).view(b, src.shape[1], nh, -1).transpose(1, 2)
            if kv is None and key in cache:
                k, v = torch.cat([cache[key][0], k], 2), torch.cat([cache[key][1], v], 2)
            cache[key] = (k, v)
        s = torch.matmul(q, k.transpose(-1, -2))
        if bias is not None:
            s = s + bias
        a = torch.matmul(torch.softmax(s.float(), -1).to(q.dtype), v)
        return F.linear(a.transpose(1, 2).reshape(b, n, -1), w[p + "o.weight"])

    def ff(self, p, x):
        w = self.w
        if self.gated:
            h = F.gelu(F.linear(x, w[p + "wi_0.weight"]), approximate="tanh") * F.linear(x, w[p + "wi_1.weight"])
        else:
            h = F.relu(F.linear(x, w[p + "wi.weight"]))
        return F.linear(h, w[p + "wo.weight"])

    def encode(self, ids):
        c, w = self.c, self.w
        h = F.embedding(ids, w["shared.weight"])
        bias = self.bias("encoder", torch.arange(ids.shape[1]), ids.shape[1], True).to(h.dtype)
        for i in range(c["num_layers"]):
            p = f"encoder.block.{i}.layer."
            h = h + self.attend(p + "0.SelfAttention.", self.rms(h, w[p + "0.layer_norm.weight"]), None, bias, {}, None)
            h = h + self.ff(p + "1.DenseReluDense.", self.rms(h, w[p + "1.layer_norm.weight"]))
        return self.rms(h, w["encoder.final_layer_norm.weight"])

    def decode(self, ids, cache, encoded):
        c, w = self.c, self.w
        past = cache[("self", 0)][0].shape[2] if ("self", 0) in cache else 0
        h = F.embedding(ids, w["shared.weight"])
        n = ids.shape[1]
        bias = self.bias("decoder", torch.arange(past, past + n), past + n, False).to(h.dtype)
        if n > 1:
            bias = bias + torch.triu(torch.full((n, past + n), torch.finfo(h.dtype).min), past + 1)
        for i in range(c.get("num_decoder_layers") or c["num_layers"]):
            p = f"decoder.block.{i}.layer."
            h = h + self.attend(p + "0.SelfAttention.", self.rms(h, w[p + "0.layer_norm.weight"]), None, bias, cache,
                                ("self", i))
            h = h + self.attend(p + "1.EncDecAttention.", self.rms(h, w[p + "1.layer_norm.weight"]), encoded, None,
                                cache, ("cross", i))
            h = h + self.ff(p + "2.DenseReluDense.", self.rms(h, w[p + "2.layer_norm.weight"]))
        h = self.rms(h, w["decoder.final_layer_norm.weight"])[:, -1:]
        if self.tied:
            h = h * c["d_model"] ** -0.5
        return F.linear(h, w["lm_head.weight"]).float(), cache

    def forward(self, ids, cache):
        """generate()'s loop shape: the first call encodes the prompt and starts the decoder."""
        if cache is None:
            encoded = self.encode(ids)
            start = torch.full((ids.shape[0], 1), self.c.get("decoder_start_token_id", 0), dtype=torch.long)
            cache = {"encoded": encoded}
            logits, cache = self.decode(start, cache, encoded)
            return logits, cache
        return self.decode(ids, cache, cache["encoded"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=1, help="best of R runs for each phase")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    weights = load_safetensors(os.path.join(args.model, "model.safetensors"))
    dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
    model = {"gpt2": Gpt2, "llama": Decoder, "qwen2": Decoder, "gemma2": Decoder, "t5": T5}[cfg["model_type"]](
        cfg, weights, dtype)
    vocab = cfg["vocab_size"]
    ids = torch.randint(0, vocab, (args.batch, args.prompt), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model.forward(ids[:, :8], None)  # warm-up
        prefill, decode = float("inf"), float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            logits, cache = model.forward(ids, None)
            token = logits[:, -1].argmax(-1, keepdim=True)
            t1 = time.perf_counter()
            for _ in range(args.new - 1):
                logits, cache = model.forward(token, cache)
                token = logits[:, -1].argmax(-1, keepdim=True)
            t2 = time.perf_counter()
            prefill, decode = min(prefill, t1 - t0), min(decode, t2 - t1)
    print(json.dumps({"engine": "pytorch-eager", "dtype": args.dtype, "batch": args.batch,
                      "prefill_tokens_per_s": args.batch * args.prompt / prefill,
                      "decode_tokens_per_s": args.batch * (args.new - 1) / decode,
                      "ttft_ms": prefill * 1e3}))


if __name__ == "__main__":
    main()
