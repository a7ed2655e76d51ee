#!/usr/bin/env node
// Runs `BIN tokenize --model MODEL FLAGS...` on a JSONL file, one line of output per input line.
// If a run fails (non-zero exit, or a wrong number of output lines), the input is halved and each
// half retried, down to single lines; a line that fails alone gets, as its output, the JSON
// string "<ours failed: MESSAGE>", so that one bad line does not hide the results of the others.
// Usage: node run_ours.js BIN MODEL IN.jsonl OUT.jsonl FLAGS...
'use strict';
const fs = require('fs');
const { spawnSync } = require('child_process');
const [bin, model, inF, outF, ...flags] = process.argv.slice(2);
const lines = fs.readFileSync(inF, 'utf8').split('\n'); if (lines[lines.length - 1] === '') lines.pop();
let runs = 0, failedLines = 0;
function run(part) {
  runs++;
  const r = spawnSync(bin, ['tokenize', '--model', model, ...flags], {
    input: part.length ? part.join('\n') + '\n' : '', maxBuffer: 1 << 30, timeout: 120000 });
  const out = r.stdout ? r.stdout.toString('utf8').split('\n') : [];
  if (out.length && out[out.length - 1] === '') out.pop();
  if (r.status === 0 && out.length === part.length) return out;
  const why = r.error ? String(r.error) : r.status !== 0
    ? `exit ${r.status}${r.signal ? ' signal ' + r.signal : ''}: ${(r.stderr || '').toString().trim().slice(0, 300)}`
    : `${out.length} output lines for ${part.length} input lines`;
  if (part.length === 1) { failedLines++; return [JSON.stringify(`<ours failed: ${why}>`)]; }
  if (runs === 1) console.error(`  ours ${flags.join(' ')}: whole run failed (${why}); retrying in halves`);
  const h = part.length >> 1;
  return run(part.slice(0, h)).concat(run(part.slice(h)));
}
const out = run(lines);
fs.writeFileSync(outF, out.length ? out.join('\n') + '\n' : '');
if (failedLines) console.error(`  ours ${flags.join(' ')}: ${failedLines} line(s) failed on their own (${runs} runs)`);
process.exit(failedLines ? 1 : 0);
