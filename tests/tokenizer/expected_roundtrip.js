#!/usr/bin/env node
// What decode(encode(x)) must give for a lossless (byte-level) tokenizer: x itself, after the
// tokenizer's own normaliser (NFC for Qwen; none for Llama-3 and GPT-2), with each lone
// surrogate replaced by U+FFFD (what the oracle and a lossy UTF-8 decoder see).
// Usage: node expected_roundtrip.js FAMILY < corpus.jsonl > expected.jsonl
'use strict';
const fs = require('fs');
const family = process.argv[2];
const a = fs.readFileSync(0, 'utf8').split('\n'); if (a[a.length - 1] === '') a.pop();
const out = a.map((l) => {
  let s = JSON.parse(l).replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
  if (family === 'qwen3') s = s.normalize('NFC');
  return JSON.stringify(s);
});
fs.writeFileSync(1, out.join('\n') + '\n');
