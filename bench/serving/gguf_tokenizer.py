#!/usr/bin/env python3
"""Write a Hugging Face tokenizer (tokenizer.json, tokenizer_config.json, special_tokens_map.json)
from the SentencePiece-style vocabulary stored in a GGUF file ("tokenizer.ggml.model" = "llama"), so
that the HF folder served by plugformer and the GGUF served by llama-server share one vocabulary.

    gguf_tokenizer.py MODEL.gguf HF_DIR

The shared random-Llama generator (make_random_llama.py) writes the vocabulary into its GGUF files
only; its HF folder has config.json + model.safetensors and no tokenizer. The load generator sends
token-id prompts, so no tokenizer is needed to encode; one is needed for the server to stream text
(serve_load.py times the chunks that carry text). Written as transformers' LlamaConverter writes a
SentencePiece BPE vocabulary: a BPE model with byte fallback whose merges are every split of a piece into
two pieces, ranked by the merged piece's score (as llama.cpp's SPM tokenizer merges the best-scored
pair first), Llama's normalizer (prepend U+2581, spaces to U+2581) and decoder. Python 3 stdlib only.
"""
import json
import os
import struct
import sys

# GGUF metadata value types
(T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY, T_UINT64,
 T_INT64, T_FLOAT64) = range(13)
SCALAR = {T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h", T_UINT32: "<I", T_INT32: "<i",
          T_FLOAT32: "<f", T_BOOL: "<?", T_UINT64: "<Q", T_INT64: "<q", T_FLOAT64: "<d"}
TOK_NORMAL, TOK_UNKNOWN, TOK_CONTROL, TOK_USER_DEFINED, TOK_UNUSED, TOK_BYTE = 1, 2, 3, 4, 5, 6


def read_gguf_metadata(path):
    """The key/value metadata of a GGUF (v2/v3) file as a dict; tensors are not read."""
    with open(path, "rb") as f:
        def take(fmt):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string():
            return f.read(take("<Q")).decode("utf-8", errors="surrogateescape")

        def value(vtype):
            if vtype == T_STRING:
                return string()
            if vtype == T_ARRAY:
                etype, n = take("<I"), take("<Q")
                if etype in SCALAR:
                    fmt = SCALAR[etype]
                    size = struct.calcsize(fmt)
                    data = f.read(size * n)
                    return [x[0] for x in struct.iter_unpack(fmt, data)]
                return [value(etype) for _ in range(n)]
            return take(SCALAR[vtype])

        if f.read(4) != b"GGUF":
            raise SystemExit(f"{path}: not a GGUF file")
        version = take("<I")
        if version < 2:
            raise SystemExit(f"{path}: GGUF v{version} is not supported")
        take("<Q")  # tensor count
        meta = {}
        for _ in range(take("<Q")):
            key = string()
            meta[key] = value(take("<I"))
        return meta


def bpe_merges(tokens, scores, types):
    """Every (left, right) split of a normal piece into two normal pieces, best-scored merged piece first."""
    ids = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (TOK_NORMAL, TOK_USER_DEFINED)}
    merges = []
    for piece, i in ids.items():
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in ids and right in ids:
                merges.append((-scores[i], i, ids[left], ids[right], left, right))
    merges.sort()
    return [[m[4], m[5]] for m in merges]


def main(argv):
    if len(argv) != 2:
        raise SystemExit(__doc__)
    gguf, out = argv
    meta = read_gguf_metadata(gguf)
    if meta.get("tokenizer.ggml.model") != "llama":
        raise SystemExit(f"{gguf}: tokenizer.ggml.model is {meta.get('tokenizer.ggml.model')!r}, only 'llama' (SentencePiece) is converted")
    tokens = meta["tokenizer.ggml.tokens"]
    scores = meta.get("tokenizer.ggml.scores", [0.0] * len(tokens))
    types = meta.get("tokenizer.ggml.token_type", [TOK_NORMAL] * len(tokens))
    unk = meta.get("tokenizer.ggml.unknown_token_id", 0)
    bos = meta.get("tokenizer.ggml.bos_token_id", 1)
    eos = meta.get("tokenizer.ggml.eos_token_id", 2)
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", True))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))

    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True}
             for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (TOK_UNKNOWN, TOK_CONTROL)]
    single, pair, special = [], [], {}
    if add_bos:
        single.append({"SpecialToken": {"id": tokens[bos], "type_id": 0}})
        pair.append({"SpecialToken": {"id": tokens[bos], "type_id": 0}})
        special[tokens[bos]] = {"id": tokens[bos], "ids": [bos], "tokens": [tokens[bos]]}
    single.append({"Sequence": {"id": "A", "type_id": 0}})
    pair.append({"Sequence": {"id": "A", "type_id": 0}})
    if add_eos:
        single.append({"SpecialToken": {"id": tokens[eos], "type_id": 0}})
        pair.append({"SpecialToken": {"id": tokens[eos], "type_id": 0}})
        special[tokens[eos]] = {"id": tokens[eos], "ids": [eos], "tokens": [tokens[eos]]}
    if add_bos:
        pair.append({"SpecialToken": {"id": tokens[bos], "type_id": 1}})
    pair.append({"Sequence": {"id": "B", "type_id": 1}})
    if add_eos:
        pair.append({"SpecialToken": {"id": tokens[eos], "type_id": 1}})

    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": tokens[unk], "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": bpe_merges(tokens, scores, types)},
    }
    config = {
        "tokenizer_class": "LlamaTokenizerFast",
        "bos_token": tokens[bos], "eos_token": tokens[eos], "unk_token": tokens[unk],
        "add_bos_token": add_bos, "add_eos_token": add_eos,
        "model_max_length": meta.get(f"{meta.get('general.architecture', 'llama')}.context_length", 2048),
        "clean_up_tokenization_spaces": False,
        "legacy": False,
    }
    special_map = {"bos_token": tokens[bos], "eos_token": tokens[eos], "unk_token": tokens[unk]}
    os.makedirs(out, exist_ok=True)
    for name, obj in (("tokenizer.json", tokenizer), ("tokenizer_config.json", config),
                      ("special_tokens_map.json", special_map)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=None if name == "tokenizer.json" else 2)
    print(f"wrote {out}/tokenizer.json ({len(tokens)} pieces, {len(tokenizer['model']['merges'])} merges, BPE + byte fallback, bos {bos} eos {eos})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
