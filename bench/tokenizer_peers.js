// tokenizer_peers.js: the published fast tokenizers, measured on the same
// corpus as bench/tokenizer_bench.sh, in the same run:
//   hf        Hugging Face tokenizers (Rust, native node binding `tokenizers`),
//             encodeBatch, single-threaded (RAYON_NUM_THREADS=1,
//             TOKENIZERS_PARALLELISM=false set by the caller)
//   tiktoken  OpenAI tiktoken (its Rust core compiled to WebAssembly, npm
//             `tiktoken`), with the tokenizer.model built from the same
//             vocabulary and Llama-3's pattern and special tokens
//
//   node tokenizer_peers.js TOKENIZER_JSON TOKENIZER_MODEL CORPUS_JSONL OUR_IDS REPEAT
// Prints "name MB/s mismatching-lines" per peer: encode time only, text
// bytes, the corpus encoded REPEAT times; ids compared with ours (OUR_IDS,
// one JSON array per line).
"use strict";
const fs = require("fs");
const [tj, model, corpusPath, oursPath, repeatArg] = process.argv.slice(2);
const repeat = Number(repeatArg || 3);
const texts = fs.readFileSync(corpusPath, "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l));
const ours = fs.readFileSync(oursPath, "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l));
const bytes = texts.reduce((n, s) => n + Buffer.byteLength(s, "utf8"), 0);

function mismatches(ids) {
  let bad = 0;
  for (let i = 0; i < texts.length; i++) if (JSON.stringify(Array.from(ids[i])) !== JSON.stringify(ours[i])) bad++;
  return bad;
}

async function hf() {
  const { Tokenizer } = require("tokenizers");
  const tok = Tokenizer.fromFile(tj);
  let out = null;
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < repeat; r++) {
    const ids = [];
    for (let i = 0; i < texts.length; i += 1000) {
      const encs = await tok.encodeBatch(texts.slice(i, i + 1000), { addSpecialTokens: false });
      for (const e of encs) ids.push(e.getIds());
    }
    if (!out) out = ids;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`hf ${(bytes * repeat / secs / 1e6).toFixed(2)} ${mismatches(out)}`);
}

function tiktoken() {
  const { Tiktoken } = require("tiktoken");
  const pat = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const bfe = fs.readFileSync(model, "utf8");
  const base = bfe.split("\n").filter((l) => l).length;
  const names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|reserved_special_token_4|>", "<|eot_id|>"];
  for (let i = 5; i < 251; i++) names.push(`<|reserved_special_token_${i}|>`);
  const specials = {};
  names.forEach((n, i) => (specials[n] = base + i));
  const enc = new Tiktoken(bfe, specials, pat);
  let out = null;
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < repeat; r++) {
    const ids = texts.map((s) => enc.encode(s, "all"));
    if (!out) out = ids;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`tiktoken ${(bytes * repeat / secs / 1e6).toFixed(2)} ${mismatches(out)}`);
  enc.free();
}

(async () => {
  await hf();
  tiktoken();
})();
