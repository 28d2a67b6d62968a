// reference.js: the reference tokenizer for the tests and the benchmark.
// Runs @lenml/tokenizers (a port of Hugging Face's tokenizers, as in
// transformers.js) on a tokenizer.json and writes one JSON array of ids per
// input item on stdout.
//
//   node reference.js TOKENIZER_JSON CONFIG_JSON MODE [REPEAT] < input > ids
//   MODE: jsonl      each input line is a JSON string
//         jsonl-bos  the same, with add_special_tokens (the post-processor)
//         raw        each input line is raw bytes, decoded as UTF-8 the way
//                    node decodes (invalid sequences -> U+FFFD)
//   REPEAT: encode the whole input this many times (benchmark), output once.
// The time spent encoding (not loading or I/O) goes to stderr as
// "encode_seconds N bytes B".
"use strict";
const fs = require("fs");
const { TokenizerLoader } = require("@lenml/tokenizers");

const [jsonPath, configPath, mode, repeatArg] = process.argv.slice(2);
if (!jsonPath || !configPath || !["jsonl", "jsonl-bos", "raw"].includes(mode)) {
  process.stderr.write("usage: node reference.js TOKENIZER_JSON CONFIG_JSON jsonl|jsonl-bos|raw [REPEAT]\n");
  process.exit(2);
}
const repeat = Number(repeatArg || 1);
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(jsonPath, "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(configPath, "utf8")),
});

const input = fs.readFileSync(0);
let texts = [];
let bytes = 0;
if (mode === "raw") {
  let start = 0;
  const dec = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
  for (let i = 0; i <= input.length; i++) {
    if (i === input.length || input[i] === 10) {
      if (i === input.length && start === i) break;
      texts.push(dec.decode(input.subarray(start, i)));
      bytes += i - start;
      start = i + 1;
    }
  }
} else {
  for (const line of input.toString("utf8").split("\n")) {
    if (line.length === 0) continue;
    const s = JSON.parse(line);
    texts.push(s);
    bytes += Buffer.byteLength(s, "utf8");
  }
}
const special = mode === "jsonl-bos";
let out = null;
const t0 = process.hrtime.bigint();
for (let r = 0; r < repeat; r++) {
  const ids = texts.map((s) => tok.encode(s, { add_special_tokens: special }));
  if (out === null) out = ids;
}
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
process.stdout.write(out.map((a) => JSON.stringify(a)).join("\n") + (out.length ? "\n" : ""));
process.stderr.write(`encode_seconds ${secs} bytes ${bytes * repeat}\n`);
