// reference_hf.js: Hugging Face tokenizers (the Rust library behind Python's
// transformers, through its native node binding `tokenizers`) on a
// tokenizer.json; one JSON array of ids per input line (JSON strings).
//   node reference_hf.js TOKENIZER_JSON < corpus.jsonl > ids
"use strict";
const fs = require("fs");
const { Tokenizer } = require("tokenizers");
const tok = Tokenizer.fromFile(process.argv[2]);
const texts = fs.readFileSync(0, "utf8").split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
(async () => {
  const out = [];
  for (let i = 0; i < texts.length; i += 1000) {
    const encs = await tok.encodeBatch(texts.slice(i, i + 1000), { addSpecialTokens: false });
    for (const e of encs) out.push(JSON.stringify(e.getIds()));
  }
  process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
})();
