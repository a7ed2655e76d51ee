#!/usr/bin/env node
// The reference: Hugging Face `tokenizers` (npm, native Rust binary) on a tokenizer.json.
// Usage: node oracle.js CACHE_DIR TOKENIZER_JSON MODE < in.jsonl > out.jsonl
//   MODE encode     every input line is a JSON string -> JSON array of ids (special tokens on)
//        encode-nospecial   same with addSpecialTokens false
//        decode     every input line is a JSON array of ids -> JSON string (special tokens kept)
//        encode-raw  the whole of stdin (raw bytes, decoded lossily: each invalid UTF-8 sequence
//                    -> U+FFFD, maximal subparts, as Rust's from_utf8_lossy) is one text -> ids
//        bench FILE [IDS_OUT]  encode every line of JSONL FILE (special tokens on), print timing
//                    as JSON; IDS_OUT: also write the ids, one JSON array a line (after timing)
// Input strings with lone surrogates ("\ud800"): node hands them to the native code as UTF-8
// with each lone surrogate replaced by U+FFFD; that is the reference behaviour.
'use strict';
const fs = require('fs');
const path = require('path');
const [cache, tjson, mode, benchFile, benchIds] = process.argv.slice(2);
if (!cache || !tjson || !mode) {
  console.error('usage: oracle.js CACHE_DIR TOKENIZER_JSON encode|encode-nospecial|decode|bench FILE');
  process.exit(2);
}
const { Tokenizer } = require(path.join(cache, 'node_modules', 'tokenizers'));
const tk = Tokenizer.fromFile(tjson);

function readLines(text) {
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

async function main() {
  if (mode === 'bench') {
    const lines = readLines(fs.readFileSync(benchFile, 'utf8')).map((l) => JSON.parse(l));
    const bytes = lines.reduce((n, s) => n + Buffer.byteLength(s, 'utf8'), 0);
    // Warm-up on a few lines (first-call costs), then time the whole set, one call per line,
    // awaited one at a time: single-threaded like ours (RAYON_NUM_THREADS=1 set by the caller).
    for (const s of lines.slice(0, 50)) await tk.encode(s, null, { addSpecialTokens: true });
    let ntok = 0;
    const all = benchIds ? [] : null;
    const t0 = process.hrtime.bigint();
    for (const s of lines) {
      const ids = (await tk.encode(s, null, { addSpecialTokens: true })).getIds();
      ntok += ids.length;
      if (all) all.push(ids);
    }
    const t1 = process.hrtime.bigint();
    if (all) fs.writeFileSync(benchIds, all.map((ids) => JSON.stringify(Array.from(ids))).join('\n') + '\n');
    // The same through encodeBatch (one call; parallelism off by the environment).
    const t2 = process.hrtime.bigint();
    const encs = await tk.encodeBatch(lines, { addSpecialTokens: true });
    const t3 = process.hrtime.bigint();
    let ntok2 = 0;
    for (const e of encs) ntok2 += e.getIds().length;
    process.stdout.write(JSON.stringify({ lines: lines.length, bytes, tokens: ntok, tokens_batch: ntok2,
      seconds_per_line_calls: Number(t1 - t0) / 1e9, seconds_batch: Number(t3 - t2) / 1e9 }) + '\n');
    return;
  }
  if (mode === 'encode-raw') {
    const text = fs.readFileSync(0).toString('utf8');
    const enc = await tk.encode(text, null, { addSpecialTokens: true });
    process.stdout.write(JSON.stringify(Array.from(enc.getIds())) + '\n');
    return;
  }
  const input = readLines(fs.readFileSync(0, 'utf8'));
  const out = [];
  for (let i = 0; i < input.length; i++) {
    const v = JSON.parse(input[i]);
    if (mode === 'decode') {
      out.push(JSON.stringify(await tk.decode(v, false)));
    } else if (mode === 'encode' || mode === 'encode-nospecial') {
      if (typeof v !== 'string') throw new Error(`line ${i + 1}: not a JSON string`);
      const enc = await tk.encode(v, null, { addSpecialTokens: mode === 'encode' });
      out.push(JSON.stringify(Array.from(enc.getIds())));
    } else {
      throw new Error(`unknown mode ${mode}`);
    }
  }
  fs.writeFileSync(1, out.length ? out.join('\n') + '\n' : '');
}
main().catch((e) => { console.error('oracle.js:', e && e.stack || e); process.exit(1); });
