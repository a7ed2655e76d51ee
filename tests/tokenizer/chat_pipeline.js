#!/usr/bin/env node
// The training data path with a real tokenizer, against Hugging Face `tokenizers` (npm):
// for every example of DATA (text, prompt/completion, messages), the ids and labels that
// `shardlora train` put in its global batch (DUMP, from --dump-grads, one example per row in
// file order) must equal the ids the oracle gives for the text, with the chat template written
// out here by hand from the family's documented format, and the labels TRL's rule gives
// (masked up to the token count of encode(prefix)).
// Usage: node chat_pipeline.js CACHE_DIR TOKENIZER_JSON FAMILY(llama3|chatml) EOS_TOKEN DATA DUMP
'use strict';
const fs = require('fs');
const path = require('path');
const [cache, tjson, family, eosTok, dataPath, dumpPath] = process.argv.slice(2);
const { Tokenizer } = require(path.join(cache, 'node_modules', 'tokenizers'));
const tk = Tokenizer.fromFile(tjson);
const enc = async (s, special) => Array.from((await tk.encode(s, null, { addSpecialTokens: special })).getIds());

// Python's str.strip() / Jinja's trim on the ASCII whitespace these tests use
const trim = (s) => s.replace(/^\s+|\s+$/g, '');

// [text, trained] pieces of a conversation, as the families' templates write them
function render(msgs) {
  const pieces = [];
  if (family === 'llama3') {
    msgs.forEach((m, i) => {
      pieces.push([(i === 0 ? '<|begin_of_text|>' : '') + '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n', false]);
      pieces.push([trim(m.content) + '<|eot_id|>', m.role === 'assistant']);
    });
  } else {
    for (const m of msgs) {
      pieces.push(['<|im_start|>' + m.role + '\n', false]);
      pieces.push([m.content + '<|im_end|>', m.role === 'assistant']);
      pieces.push(['\n', false]);
    }
  }
  return pieces;
}

function readDump(p) {
  const b = fs.readFileSync(p);
  const n = Number(b.readBigUInt64LE(0));
  const h = JSON.parse(b.subarray(8, 8 + n).toString());
  const t = (name) => {
    const e = h[name];
    const [s, f] = e.data_offsets;
    const a = new BigInt64Array(b.buffer.slice(b.byteOffset + 8 + n + s, b.byteOffset + 8 + n + f));
    return { shape: e.shape, v: Array.from(a, Number) };
  };
  return { ids: t('input_ids'), labels: t('labels') };
}

async function main() {
  const eos = tk.tokenToId(eosTok);
  const lines = fs.readFileSync(dataPath, 'utf8').split('\n').filter((l) => l.trim());
  const dump = readDump(dumpPath);
  const [G, T] = dump.ids.shape;
  if (G !== lines.length) throw new Error(`dump has ${G} rows, data ${lines.length} lines`);
  let fails = 0;
  for (let i = 0; i < lines.length; i++) {
    const ex = JSON.parse(lines[i]);
    let ids, labels, kind;
    if (ex.messages) {
      kind = 'messages';
      const pieces = render(ex.messages);
      ids = await enc(pieces.map((p) => p[0]).join(''), false);
      labels = new Array(ids.length).fill(-100);
      let prefix = '';
      for (let k = 0; k < pieces.length; k++) {
        const start = (await enc(prefix, false)).length;
        prefix += pieces[k][0];
        const end = k + 1 < pieces.length ? (await enc(prefix, false)).length : ids.length;
        if (pieces[k][1]) for (let t = start; t < end; t++) labels[t] = ids[t];
      }
    } else if ('prompt' in ex) {
      kind = 'prompt/completion';
      ids = await enc(ex.prompt + ex.completion, true);
      if (ids[ids.length - 1] !== eos) ids.push(eos);
      const np = (await enc(ex.prompt, true)).length;
      labels = ids.map((v, t) => (t < np ? -100 : v));
    } else {
      kind = 'text';
      ids = await enc(ex.text, true);
      if (ids[ids.length - 1] !== eos) ids.push(eos);
      labels = ids.slice();
    }
    const row = dump.ids.v.slice(i * T, i * T + T), lrow = dump.labels.v.slice(i * T, i * T + T);
    const n = Math.min(ids.length, T);
    const same = (a, b) => a.length === b.length && a.every((x, j) => x === b[j]);
    const okIds = same(row.slice(0, n), ids.slice(0, n)), okLab = same(lrow.slice(0, n), labels.slice(0, n));
    const okPad = lrow.slice(n).every((x) => x === -100);
    const counted = labels.slice(1, n).filter((x) => x !== -100).length;
    if (okIds && okLab && okPad) {
      console.log(`ok   line ${i + 1} (${kind}): ${n} ids, ${counted} counted, equal to the oracle`);
    } else {
      fails++;
      console.log(`FAIL line ${i + 1} (${kind}): ${okIds ? '' : 'ids differ '}${okLab ? '' : 'labels differ '}${okPad ? '' : 'padding counted'}`);
      console.log(`     ours   ${JSON.stringify(row.slice(0, n))}\n     oracle ${JSON.stringify(ids.slice(0, n))}`);
      console.log(`     ours labels   ${JSON.stringify(lrow.slice(0, n))}\n     oracle labels ${JSON.stringify(labels.slice(0, n))}`);
    }
  }
  console.log(`chat_pipeline ${family}: ${lines.length - fails} passed, ${fails} failed`);
  process.exit(fails ? 1 : 0);
}
main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
