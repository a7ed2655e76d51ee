#!/usr/bin/env node
// Compares two JSONL files line by line (ours vs the oracle) and reports mismatches.
// Usage: node compare.js LABEL CORPUS.jsonl OURS.jsonl ORACLE.jsonl [--expect-text]
//   ids mode (default): every line a JSON array of ids; the report shows the text, both arrays
//     and the first differing position.
//   --expect-text: ORACLE.jsonl is the corpus itself (or the oracle's decode) and OURS.jsonl our
//     decode; strings are compared.
// Exit 0 when equal, 1 otherwise. Prints one summary line (and up to 10 mismatches).
'use strict';
const fs = require('fs');
const [label, corpusF, oursF, oracleF] = process.argv.slice(2);
const lines = (f) => { const a = fs.readFileSync(f, 'utf8').split('\n'); if (a[a.length - 1] === '') a.pop(); return a; };
const corpus = lines(corpusF), ours = lines(oursF), oracle = lines(oracleF);
const short = (s, n = 160) => { const j = s === undefined ? 'undefined' : JSON.stringify(s); return j.length > n ? j.slice(0, n) + `...(${j.length} chars)` : j; };
let bad = 0;
const shown = [];
if (ours.length !== oracle.length) {
  console.log(`${label}: FAIL: ours has ${ours.length} lines, the oracle ${oracle.length} (corpus ${corpus.length})`);
}
const n = Math.max(ours.length, oracle.length);
for (let i = 0; i < n; i++) {
  let a, b;
  try { a = ours[i] === undefined ? undefined : JSON.parse(ours[i]); } catch (e) { a = `<not JSON: ${ours[i].slice(0, 80)}>`; }
  b = oracle[i] === undefined ? undefined : JSON.parse(oracle[i]);
  if (JSON.stringify(a) === JSON.stringify(b)) continue;
  bad++;
  if (shown.length >= 10) continue;
  let pos = -1;
  if (Array.isArray(a) && Array.isArray(b)) {
    pos = 0; while (pos < a.length && pos < b.length && a[pos] === b[pos]) pos++;
  } else if (typeof a === 'string' && typeof b === 'string') {
    pos = 0; while (pos < a.length && pos < b.length && a[pos] === b[pos]) pos++;
  }
  const win = (x) => (Array.isArray(x) || typeof x === 'string') && pos >= 0
    ? `${short(x.slice(Math.max(0, pos - 3), pos + 8))} (len ${x.length})` : short(x);
  shown.push(`  line ${i + 1}: text ${short(corpus[i] === undefined ? undefined : JSON.parse(corpus[i]))}\n` +
             `    first difference at position ${pos}\n    ours   [${Math.max(0, pos - 3)}..]: ${win(a)}\n` +
             `    oracle [${Math.max(0, pos - 3)}..]: ${win(b)}`);
}
console.log(`${label}: ${n} lines, ${bad} mismatches${bad ? ' (FAIL)' : ''}`);
if (shown.length) console.log(shown.join('\n'));
process.exit(bad || ours.length !== oracle.length ? 1 : 0);
