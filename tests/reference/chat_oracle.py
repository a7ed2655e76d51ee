"""The data-level chat oracle: what `shardlora preview --jsonl` must print for a JSONL file of
conversations, computed independently of shardlora's C code, from
  - the chat template rendered by tests/reference/jinja_oracle.py (Python's Jinja2 configured
    as transformers' apply_chat_template configures it), and
  - the Hugging Face `tokenizers` npm package (the tokenizer tests' oracle) for the ids and
    the character offsets of the tokens (the node binding gives offsets in characters, i.e.
    code points, as the Python binding does: checked on an emoji in check_offsets()).

Variables given to the template: messages, tools and documents (when the line has them, not
null), add_generation_prompt, the special tokens of tokenizer_config.json as transformers'
special_tokens_map gives them (bos, eos, unk, sep, pad, cls, mask tokens and
additional_special_tokens, those set; an AddedToken object gives its "content"), then
--chat-template-kwargs.
The template: --chat-template FILE, else MODEL/chat_template.jinja, else tokenizer_config.json's
"chat_template" (a string, or a list of {"name", "template"}: "default", and "tool_use" for a
line with tools when there is one, as transformers picks them).

The label rule (issue 17 brief): R(k, g) = render(messages[:k], add_generation_prompt=g),
F = R(n, False).
  - A template with {% generation %} blocks: one segment, text F, counted = the blocks' spans.
  - No assistant message: "nothing to train on", except with --train-on-prompt (one segment,
    text F, every token counted, as such lines were taken before templates).
  - Otherwise, for each assistant message i in order: P = R(i, True), N = R(i + 1, False);
    N must start with P; A = N[len(P):] is counted. If P starts with the current segment's text
    E, P[len(E):] (masked) and A (counted) are appended to it, else a new segment P + A starts;
    E = N. At the end F[len(E):] is appended (masked) when F starts with E.
  - Each segment is tokenised whole (no special tokens added). For a counted span [s, e) the
    tokens char_to_token(s) .. char_to_token(e - 1) are counted (transformers'
    return_assistant_tokens_mask rule); char_to_token(c) = the first token whose offsets
    [start, end) hold c. --train-on-prompt counts every token. The first token of every
    segment after the first is masked in any case: positions restart there, so nothing
    before it in the example may predict it (the first segment's first token is the HF
    shift's to drop, and stays as the rule says).
Output, one line per input line: {"text": the segments' texts joined, "input_ids": [...],
"labels": [id where counted, else -100], "segments": [tokens per segment] only when there are
several}. An input line that fails (template error, nothing to train on, a non-prefix render)
stops with "FILE:LINE: message" on stderr and exit 3 (raised template errors read
"FILE:LINE: template error: MESSAGE").

Usage: chat_oracle.py --model DIR --data FILE.jsonl --cache TOKENIZER_CACHE
                      [--chat-template FILE] [--chat-template-kwargs JSON] [--train-on-prompt]
                      [--now EPOCH]
TOKENIZER_CACHE is the npm cache of tests/tokenizer/install.sh (node_modules/tokenizers).
"""

import argparse
import functools
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jinja_oracle  # noqa: E402

# One node process for every text of the file: JSONL strings in, {"ids", "offsets"} out.
NODE_TOKENIZE = r"""
const fs = require('fs');
const path = require('path');
const [cache, tjson] = process.argv.slice(1);
const { Tokenizer } = require(path.join(cache, 'node_modules', 'tokenizers'));
const tk = Tokenizer.fromFile(tjson);
(async () => {
  const lines = fs.readFileSync(0, 'utf8').split('\n').filter((l) => l.length);
  const out = [];
  for (const l of lines) {
    const e = await tk.encode(JSON.parse(l), null, { addSpecialTokens: false });
    out.push(JSON.stringify({ ids: Array.from(e.getIds()), offsets: e.getOffsets() }));
  }
  fs.writeFileSync(1, out.length ? out.join('\n') + '\n' : '');
})().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
"""


class LineError(Exception):
    pass


def tokenize_all(cache, tokenizer_json, texts):
    """[(ids, offsets)] for texts, offsets in characters (code points), one node process."""
    if not texts:
        return []
    inp = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts)
    r = subprocess.run(["node", "-e", NODE_TOKENIZE, cache, tokenizer_json],
                       input=inp.encode("utf-8"), capture_output=True)
    if r.returncode != 0:
        sys.exit("chat_oracle: node tokenizer failed: " + r.stderr.decode(errors="replace"))
    outs = [json.loads(l) for l in r.stdout.decode("utf-8").splitlines()]
    if len(outs) != len(texts):
        sys.exit(f"chat_oracle: node gave {len(outs)} encodings for {len(texts)} texts")
    return [(o["ids"], [tuple(x) for x in o["offsets"]]) for o in outs]


def check_offsets(cache, tokenizer_json):
    """The node binding's offsets must be code points (not UTF-16 units or bytes): an emoji
    (2 UTF-16 units, 4 bytes) followed by a letter."""
    text = "\U0001F600z"
    ids, offs = tokenize_all(cache, tokenizer_json, [text])[0]
    if not offs or offs[-1][1] != len(text):
        sys.exit(f"chat_oracle: offsets of {text!r} end at {offs[-1][1] if offs else None}, "
                 f"not {len(text)} (code points): convert them")


def load_template(model, template_file):
    """(template, template for lines with tools or None)."""
    if template_file:
        with open(template_file, encoding="utf-8") as f:
            return f.read(), None
    jpath = os.path.join(model, "chat_template.jinja")
    if os.path.exists(jpath):
        with open(jpath, encoding="utf-8") as f:
            return f.read(), None
    with open(os.path.join(model, "tokenizer_config.json"), encoding="utf-8") as f:
        t = json.load(f).get("chat_template")
    tools_t = None
    if isinstance(t, list):  # transformers: "default", and "tool_use" for calls with tools
        named = {x.get("name"): x.get("template") for x in t if isinstance(x, dict)}
        t, tools_t = named.get("default"), named.get("tool_use")
    if not isinstance(t, str):
        sys.exit(f"chat_oracle: {model}: no chat template")
    return t, tools_t


# transformers' SPECIAL_TOKENS_ATTRIBUTES: special_tokens_map holds the ones that are set
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                  "mask_token", "additional_special_tokens")


def special_tokens(model):
    with open(os.path.join(model, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    text = lambda v: v["content"] if isinstance(v, dict) else v  # noqa: E731 - AddedToken
    out = {}
    for k in SPECIAL_TOKENS:
        v = cfg.get(k)
        v = [text(x) for x in v] if isinstance(v, list) else text(v)
        if v:
            out[k] = v
    return out


@functools.lru_cache(maxsize=16)
def has_generation(source):
    env = jinja_oracle.make_env()
    try:
        tree = env.parse(source)
    except Exception:  # noqa: BLE001 - the render reports it
        return False

    def walk(node):
        if isinstance(node, jinja_oracle.jn.Call) and \
                isinstance(node.node, jinja_oracle.jn.ExtensionAttribute) and \
                node.node.name == "_gen_mark":
            return True
        return any(walk(c) for c in node.iter_child_nodes())

    return walk(tree)


def segments_of(row, sources, base_ctx, now, train_on_prompt=False):
    """[(text, [(s, e) counted char ranges])] for one conversation, per the label rule.
    sources: (template, template for lines with tools or None)."""
    msgs = row["messages"]
    extra = {k: row[k] for k in ("tools", "documents") if row.get(k) is not None}
    source = sources[1] if "tools" in extra and sources[1] else sources[0]
    generation = has_generation(source)

    def render(k, gen_prompt, spans=False):
        ctx = dict(base_ctx)
        ctx.setdefault("tools", None)  # transformers passes tools=None, documents=None
        ctx.setdefault("documents", None)
        ctx.update(extra)
        ctx["messages"] = msgs[:k]
        ctx["add_generation_prompt"] = gen_prompt
        try:
            text, sp = jinja_oracle.render(source, ctx, now, spans=spans)
        except jinja_oracle.OracleError as e:
            if e.kind == "raised":
                raise LineError(f"template error: {e.message}") from None
            raise LineError(f"template {e.kind} error: {e.message}") from None
        return text, sp

    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in msgs):
        if train_on_prompt:  # every token counts: the whole conversation, one segment
            return [(render(len(msgs), False)[0].decode("utf-8"), [])]
        raise LineError("nothing to train on (no assistant message)")
    if generation:
        text, spans = render(len(msgs), False, spans=True)
        chars = [(len(text[:s].decode("utf-8")), len(text[:e].decode("utf-8"))) for s, e in spans]
        return [(text.decode("utf-8"), chars)]
    segs = []  # [text, counted]
    for i, m in enumerate(msgs):
        if m.get("role") != "assistant":
            continue
        p = render(i, True)[0].decode("utf-8")
        n = render(i + 1, False)[0].decode("utf-8")
        if not n.startswith(p):
            raise LineError(f"the template does not render assistant message {i} as a "
                            "continuation of its prompt")
        a = n[len(p):]
        if segs and p.startswith(segs[-1][0]):
            seg = segs[-1]
            seg[0] += p[len(seg[0]):]
        else:
            seg = [p, []]
            segs.append(seg)
        seg[1].append((len(seg[0]), len(seg[0]) + len(a)))
        seg[0] += a
        assert seg[0] == n
    f = render(len(msgs), False)[0].decode("utf-8")
    if f.startswith(segs[-1][0]):
        segs[-1][0] = f
    return [(t, c) for t, c in segs]


def char_to_token(offsets, c):
    for t, (s, e) in enumerate(offsets):
        if s <= c < e:
            return t
    return None


def labels_of(ids, offsets, counted, train_on_prompt):
    if train_on_prompt:
        return list(ids)
    labels = [-100] * len(ids)
    for s, e in counted:
        a, b = char_to_token(offsets, s), char_to_token(offsets, e - 1)
        if a is None or b is None:
            raise LineError(f"no token holds character {s if a is None else e - 1} of a counted "
                            "span")
        for t in range(a, b + 1):
            labels[t] = ids[t]
    return labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--chat-template")
    ap.add_argument("--chat-template-kwargs")
    ap.add_argument("--train-on-prompt", action="store_true")
    ap.add_argument("--now", type=int)
    a = ap.parse_args()
    sources = load_template(a.model, a.chat_template)
    base = special_tokens(a.model)
    if a.chat_template_kwargs:
        kw = json.loads(a.chat_template_kwargs)
        if not isinstance(kw, dict):
            sys.exit("chat_oracle: --chat-template-kwargs is not a JSON object")
        base.update(kw)
    tj = os.path.join(a.model, "tokenizer.json")
    check_offsets(a.cache, tj)
    rows = []
    with open(a.data, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append(segments_of(row, sources, base, a.now, a.train_on_prompt))
            except LineError as e:
                sys.stderr.write(f"{a.data}:{lineno}: {e}\n")
                return 3
    texts = [t for segs in rows for t, _ in segs]
    encs = iter(tokenize_all(a.cache, tj, texts))
    out = []
    for segs in rows:
        ids, labels, lens = [], [], []
        for k, (text, counted) in enumerate(segs):
            sid, offs = next(encs)
            lab = labels_of(sid, offs, counted, a.train_on_prompt)
            if k and lab:
                lab[0] = -100
            labels += lab
            ids += sid
            lens.append(len(sid))
        obj = {"text": "".join(t for t, _ in segs), "input_ids": ids, "labels": labels}
        if len(segs) > 1:
            obj["segments"] = lens
        out.append(json.dumps(obj, ensure_ascii=False))
    sys.stdout.buffer.write(("\n".join(out) + "\n").encode("utf-8") if out else b"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
