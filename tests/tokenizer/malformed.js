#!/usr/bin/env node
// Writes malformed model directories for the tokenizer_malformed test, from a valid base
// tokenizer.json (the GPT-2 one). Each case: OUT/<case>/tokenizer.json, and a line in
// OUT/cases.tsv: dir <TAB> case <TAB> regex (case-insensitive) that the error message must match
// besides naming tokenizer.json.
// Usage: node malformed.js BASE_TOKENIZER_JSON OUT_DIR
'use strict';
const fs = require('fs');
const path = require('path');
const [baseF, out] = process.argv.slice(2);
const base = JSON.parse(fs.readFileSync(baseF, 'utf8'));
const clone = () => JSON.parse(JSON.stringify(base));
const cases = [];
// Directories are numbered (c01, c02...) so that the path in a message gives nothing away.
function add(name, want, content) {
  const dir = path.join(out, `c${String(cases.length + 1).padStart(2, '0')}`);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), typeof content === 'string' ? content : JSON.stringify(content));
  cases.push(`${path.basename(dir)}\t${name}\t${want}`);
}
let t;
add('not_json', 'json|pars|syntax|unexpected|invalid|expected|line [0-9]|column', '{"version": "1.0", "model": {"type": "BPE", vocab: }');
add('truncated', 'json|pars|syntax|unexpected|invalid|end', JSON.stringify(base).slice(0, 5000));
add('empty_file', 'json|pars|empty|unexpected|invalid|end', '');
add('top_level_array', 'object|model|expected', '[1, 2, 3]');
t = clone(); delete t.model; add('missing_model', 'model', t);
t = clone(); t.model = 'BPE'; add('model_not_object', 'model', t);
t = clone(); delete t.model.type; delete t.model.merges; t.model.vocab = { a: 0 };
add('model_without_type_or_merges', 'model|merges|type', t);
t = clone(); t.model.type = 'Unigram'; t.model.vocab = [['a', 0.0]]; add('unknown_model_type', 'model|Unigram', t);
t = clone(); t.model.merges = [1, 2, 3]; add('merges_numbers', 'merges', t);
t = clone(); t.model.merges = [['Ġ', 't', 'h']]; add('merges_triple', 'merges', t);
t = clone(); t.model.merges = ['Ġt']; add('merges_string_one_token', 'merges', t);
t = clone(); t.model.merges = { 'Ġ': 't' }; add('merges_object', 'merges', t);
t = clone(); t.model.vocab = [1, 2]; add('vocab_not_object', 'vocab', t);
t = clone(); t.pre_tokenizer = { type: 'FooBarPreTokenizer' }; add('unknown_pre_tokenizer', 'pre_tokenizer|FooBarPreTokenizer', t);
t = clone(); t.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }, { type: 'Whitespace2000' }] };
add('unknown_pre_tokenizer_in_sequence', 'pre_tokenizer|Whitespace2000', t);
t = clone(); t.normalizer = { type: 'NFKD_Frobnicate' }; add('unknown_normalizer', 'normalizer|NFKD_Frobnicate', t);
t = clone(); t.decoder = { type: 'CTCDecoder2' }; add('unknown_decoder', 'decoder|CTCDecoder2', t);
t = clone(); t.post_processor = { type: 'RobertaProcessing9' }; add('unknown_post_processor', 'post_processor|RobertaProcessing9', t);
t = clone(); t.pre_tokenizer = { type: 'Split', pattern: { Regex: '(unclosed' }, behavior: 'Isolated', invert: false };
add('bad_split_regex', 'pre_tokenizer|regex|Split|pattern', t);
t = clone(); t.added_tokens = [{ id: 'x', content: 5 }]; add('bad_added_tokens', 'added_tokens', t);
t = clone(); t.normalizer = { type: 'Replace', pattern: { Regex: '(?<' }, content: '' };
add('bad_replace_regex', 'normalizer|regex|Replace|pattern', t);
const template = (single, pair) => ({ type: 'TemplateProcessing', single, pair,
  special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [50256], tokens: ['<|endoftext|>'] } } });
const A = { Sequence: { id: 'A', type_id: 0 } }, B = { Sequence: { id: 'B', type_id: 1 } };
t = clone(); t.post_processor = template([{ SpecialToken: { id: '<|nope|>', type_id: 0 } }, A], [A, B]);
add('template_unknown_special', 'post_processor|single|special', t);
t = clone(); t.post_processor = template([A], [A, { Sequence: { id: 'C', type_id: 1 } }]);
add('template_pair_bad_sequence', 'post_processor|pair|Sequence', t);
fs.writeFileSync(path.join(out, 'cases.tsv'), cases.join('\n') + '\n');
