"""The chat-template oracle: Python's Jinja2 configured as Hugging Face transformers'
apply_chat_template configures it, so that shardlora's own engine (io/jinja.c, through
build/tests/unit/jinja_render) can be compared with it byte for byte.

The configuration (transformers' chat_template_utils, as documented there and in the
shardlora issue 17 brief): ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True) with the loopcontrols extension and a {% generation %} block; the
filter tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) =
json.dumps with those arguments; the globals raise_exception(msg) (raises TemplateError(msg))
and strftime_now(fmt) (datetime.now().strftime(fmt)).

{% generation %}...{% endgeneration %} is written here as an extension of our own: the block
renders its body unchanged, in a scope of its own as transformers' call block does (a
{% set %} in it does not outlive it; a break / continue in it outside its own loop does not
compile), and records the UTF-8 BYTE range [start, end) of that output in the final text
(transformers records character offsets; shardlora works in bytes). Spans are listed in
the order the blocks close, as transformers appends them (a nested block before its outer
one). The range is taken from the position of the output stream when the block opens and
closes, so it is exact wherever the block writes straight to the output (top level, if,
for, nested generation blocks). Inside a macro, a call block, a {% set %} block, a {% filter %} block or
a recursive loop the output is buffered and moved around later, so no honest position
exists: with --spans such a template is refused ("unsupported").

Usage:
  jinja_oracle.py TEMPLATE_FILE CONTEXT_JSON_FILE [--now EPOCH] [--spans]
      prints the rendered text exactly (UTF-8, no newline added) to stdout, or with --spans
      one JSON object {"text": ..., "generation": [[start, end], ...]} (byte offsets).
      --now fixes strftime_now's clock (local time of that epoch second; set TZ).
      Errors: "error: KIND: message" on stderr and exit 1; KIND is one of
        syntax       TemplateSyntaxError (incl. an unknown filter or test)
        raised       raise_exception(msg) (message = msg exactly)
        runtime      any other error while rendering (undefined attribute, bad operand
                     types, division by zero, a sandbox violation, ...)
        limit        more than 64 MiB of output, or recursion too deep
        unsupported  {% generation %} inside buffered output, with --spans
  jinja_oracle.py --selftest
      checks a few renders known by hand (and the CLI); exits non-zero on a failure.

Used as a module by tests/chat/jinja_diff.py and tests/reference/chat_oracle.py:
render(source, context, now=None) -> (text, spans) or raises OracleError(kind, message).
"""

import datetime
import json
import os
import subprocess
import sys
import tempfile

import jinja2
import jinja2.ext
import jinja2.nodes as jn
from jinja2.exceptions import TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OUTPUT = 64 << 20  # bytes, as io/jinja.h's default bound


class OracleError(Exception):
    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class RaisedError(TemplateError):
    """What raise_exception(msg) raises: transformers raises TemplateError(msg); the subclass
    only lets the oracle tell it from Jinja2's own errors."""


class GenerationExtension(jinja2.ext.Extension):
    """{% generation %} body {% endgeneration %}: the body unchanged, between two marks that
    record the byte position of the output stream (kept by render() in self.pos). Spans are
    listed in the order the blocks close."""

    tags = {"generation"}

    def __init__(self, environment):
        super().__init__(environment)
        self.reset()

    def reset(self):
        self.pos = 0  # bytes yielded so far by the top-level render
        self.spans = []  # [start, end], in the order the blocks close (as transformers
        #                   appends a span when its block's caller returns: inner first)
        self.open = []  # starts of the blocks still open

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        # transformers compiles the body as a callable (a call block): a break or continue in
        # it, outside a loop of its own, does not compile there (Python's SyntaxError)
        if any(self._loose_loopcontrol(n) for n in body):
            parser.fail("break or continue inside {% generation %} outside a loop of its own",
                        lineno)
        mark = lambda opening: jn.Output(  # noqa: E731
            [self.call_method("_gen_mark", [jn.Const(opening)], lineno=lineno)], lineno=lineno)
        # transformers renders the body as a call block's caller: a {% set %} in it stays local
        return [mark(True), jn.Scope(body, lineno=lineno), mark(False)]

    def _loose_loopcontrol(self, node):
        if isinstance(node, (jn.Break, jn.Continue)):
            return True
        if isinstance(node, jn.For):  # its body may break; its else and test may not
            return any(self._loose_loopcontrol(n) for n in node.else_)
        return any(self._loose_loopcontrol(n) for n in node.iter_child_nodes())

    def _gen_mark(self, opening):
        if opening:
            self.open.append(self.pos)
        else:
            self.spans.append([self.open.pop(), self.pos])
        return ""


def _buffered_generation(tree):
    """True when a generation mark sits where Jinja2 buffers the output (see the module
    docstring)."""

    def walk(node, buffered):
        if isinstance(node, jn.Call) and isinstance(node.node, jn.ExtensionAttribute) \
                and node.node.name == "_gen_mark":
            return buffered
        if isinstance(node, (jn.Macro, jn.CallBlock, jn.AssignBlock, jn.FilterBlock)) or \
                (isinstance(node, jn.For) and node.recursive):
            buffered = True
        return any(walk(child, buffered) for child in node.iter_child_nodes())

    return walk(tree, False)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _raise_exception(message):
    raise RaisedError(message)


def make_env(now=None):
    """The environment as transformers makes it; now (epoch seconds) fixes strftime_now."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationExtension, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    if now is None:
        env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    else:
        env.globals["strftime_now"] = \
            lambda fmt: datetime.datetime.fromtimestamp(now).strftime(fmt)
    return env


def _template_line(tb):
    """The template line of the innermost template frame of a traceback, or None."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_COMPILED = {}  # (source, now) -> (env, template, buffered generation?), or the OracleError


def _compile(source, now):
    key = (source, now)
    if key not in _COMPILED:
        env = make_env(now)
        try:
            _COMPILED[key] = (env, env.from_string(source), _buffered_generation(env.parse(source)))
        except TemplateSyntaxError as e:
            _COMPILED[key] = OracleError("syntax", f"line {e.lineno}: {e.message}")
        except Exception as e:  # noqa: BLE001 - e.g. Python's SyntaxError for a {% break %}
            # outside a loop: Jinja2 fails while compiling, so it is a syntax error too
            _COMPILED[key] = OracleError("syntax", f"{type(e).__name__}: {e}")
        if len(_COMPILED) > 512:
            _COMPILED.pop(next(iter(_COMPILED)))
    return _COMPILED[key]


def render(source, context, now=None, spans=False):
    """Renders source with the variables of dict context. Returns (text, [[s, e], ...]) with
    byte offsets; raises OracleError(kind, message)."""
    compiled = _compile(source, now)
    if isinstance(compiled, OracleError):
        raise OracleError(compiled.kind, compiled.message)
    env, tmpl, buffered = compiled
    if spans and buffered:
        raise OracleError("unsupported", "{% generation %} inside a macro, call, set, "
                          "filter block or recursive loop has no position in the output")
    ext = env.extensions[GenerationExtension.identifier]
    ext.reset()
    parts = []
    try:
        for block in tmpl.generate(**context):
            b = block.encode("utf-8")  # a lone surrogate from the JSON fails here: runtime
            parts.append(b)
            ext.pos += len(b)
            if ext.pos > MAX_OUTPUT:
                raise OracleError("limit", f"output over {MAX_OUTPUT} bytes")
    except OracleError:
        raise
    except RaisedError as e:
        raise OracleError("raised", str(e.message)) from None
    except TemplateSyntaxError as e:  # e.g. a filter name known only at run time
        raise OracleError("syntax", f"line {e.lineno}: {e.message}") from None
    except RecursionError:
        raise OracleError("limit", "recursion too deep") from None
    except MemoryError:
        raise OracleError("limit", "out of memory") from None
    except Exception as e:  # noqa: BLE001 - every other error is Jinja2's runtime error
        line = _template_line(e.__traceback__)
        where = f"line {line}: " if line else ""
        raise OracleError("runtime", f"{where}{type(e).__name__}: {e}") from None
    text = b"".join(parts)
    if ext.open:
        raise OracleError("runtime", "a {% generation %} block did not close")
    return text, [list(s) for s in ext.spans]


# --------------------------------------------------------------------------------------
# self-test: renders whose results are known by hand

SELFTEST = [
    # (template, context, now, expected text or ("error", kind), expected spans or None)
    ("{{ [1, 'a', None, True, 1.5, 1e16, {'k': \"it's\"}] }}", {}, None,
     "[1, 'a', None, True, 1.5, 1e+16, {'k': \"it's\"}]", None),
    ("{% for m in messages %}\n  {{ m.role }}:{{ loop.index }}/{{ loop.length }}\n"
     "{% endfor %}\nend", {"messages": [{"role": "a"}, {"role": "b"}]}, None,
     "  a:1/2\n  b:2/2\nend", None),
    ("  {% if x %}\nyes\n  {%+ endif %}|{#- c #} {{- 'z' }}", {"x": 1}, None, "yes\n  |z", None),
    ("{{ d | tojson }}|{{ d | tojson(indent=2) }}", {"d": {"é": [1, 2.0]}}, None,
     '{"é": [1, 2.0]}|{\n  "é": [\n    1,\n    2.0\n  ]\n}', None),
    ("{% for x in [1,2,3] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% endfor %}",
     {}, None, "13", None),
    ("a{% generation %}é€{% generation %}😀{% endgeneration %}{% endgeneration %}b",
     {}, None, "aé€😀b", [[6, 10], [1, 10]]),
    ("{% for m in ms %}{{ m.r }}:{% if m.r == 'assistant' %}{% generation %}{{ m.c }}"
     "{% endgeneration %}{% else %}{{ m.c }}{% endif %};{% endfor %}",
     {"ms": [{"r": "user", "c": "日本"}, {"r": "assistant", "c": "はい"}]}, None,
     "user:日本;assistant:はい;", [[22, 28]]),
    ("{% macro m() %}{% generation %}x{% endgeneration %}{% endmacro %}{{ m() }}", {}, None,
     ("error", "unsupported"), []),
    ("{{ raise_exception('bad role: ' ~ r) }}", {"r": "tool"}, None,
     ("error", "raised"), "bad role: tool"),
    ("{% if x %}", {}, None, ("error", "syntax"), None),
    ("{{ x | nosuchfilter }}", {}, None, ("error", "syntax"), None),
    ("{{ x.y.z }}", {}, None, ("error", "runtime"), None),
    ("{{ 1 / 0 }}", {}, None, ("error", "runtime"), None),
    ("{{ x.__class__ }}", {"x": "s"}, None, "", None),  # the sandbox hides it: undefined
    ("{{ m.append(1) }}", {"m": []}, None, ("error", "runtime"), None),  # immutable sandbox
    ("{{ strftime_now('%d %b %Y %H:%M') }}", {}, 86400 * 365, "01 Jan 1971 00:00", None),
    ("{{ x }}|{{ x is defined }}|{{ (x or 'd') }}|{{ x | default('e') }}", {}, None,
     "|False|d|e", None),
]


def _selftest():
    fails = 0
    os.environ["TZ"] = "UTC"
    import time
    time.tzset()
    for i, (src, ctx, now, want, want_spans) in enumerate(SELFTEST):
        use_spans = isinstance(want_spans, list)
        try:
            text, spans = render(src, ctx, now, spans=use_spans)
            got = text.decode("utf-8")
        except OracleError as e:
            got, spans = ("error", e.kind), None
            if e.kind == "raised" and isinstance(want_spans, str) and e.message != want_spans:
                got = ("error", "raised with message " + repr(e.message))
        ok = got == want and (not use_spans or want_spans == [] or spans == want_spans)
        print(f"  {'ok  ' if ok else 'FAIL'} case {i}: {src[:60]!r}")
        if not ok:
            print(f"       got {got!r} spans {spans}\n       want {want!r} spans {want_spans}")
            fails += 1
    # the command line: text to stdout as it is, errors on stderr with exit 1
    with tempfile.TemporaryDirectory() as d:
        tp, cp = os.path.join(d, "t.jinja"), os.path.join(d, "c.json")
        with open(tp, "w", encoding="utf-8") as f:
            f.write("{{ bos_token }}{% generation %}{{ x }}{% endgeneration %}\n")
        with open(cp, "w", encoding="utf-8") as f:
            json.dump({"bos_token": "<s>", "x": "ü"}, f)
        me = os.path.abspath(__file__)
        r = subprocess.run([sys.executable, me, tp, cp], capture_output=True)
        # Jinja2 drops one trailing newline of the template (keep_trailing_newline is off)
        ok = r.returncode == 0 and r.stdout == "<s>ü".encode()
        r2 = subprocess.run([sys.executable, me, tp, cp, "--spans"], capture_output=True)
        ok = ok and r2.returncode == 0 and \
            json.loads(r2.stdout) == {"text": "<s>ü", "generation": [[3, 5]]}
        with open(tp, "w", encoding="utf-8") as f:
            f.write("{{ raise_exception('no') }}")
        r3 = subprocess.run([sys.executable, me, tp, cp], capture_output=True)
        ok = ok and r3.returncode == 1 and r3.stdout == b"" and r3.stderr == b"error: raised: no\n"
        print(f"  {'ok  ' if ok else 'FAIL'} the command line (text, --spans, an error)")
        fails += not ok
    print(f"jinja_oracle selftest: {len(SELFTEST) + 1 - fails} passed, {fails} failed")
    return 1 if fails else 0


def main(argv):
    if argv == ["--selftest"]:
        return _selftest()
    args, now, spans = [], None, False
    it = iter(argv)
    for a in it:
        if a == "--now":
            now = int(next(it, "missing --now value"))
        elif a == "--spans":
            spans = True
        else:
            args.append(a)
    if len(args) != 2:
        print("usage: jinja_oracle.py TEMPLATE_FILE CONTEXT_JSON_FILE [--now EPOCH] [--spans]"
              " | --selftest", file=sys.stderr)
        return 2
    with open(args[0], "rb") as f:
        source = f.read().decode("utf-8")
    with open(args[1], "rb") as f:
        context = json.loads(f.read().decode("utf-8"))
    if not isinstance(context, dict):
        print("error: runtime: the context is not a JSON object", file=sys.stderr)
        return 1
    try:
        text, gen = render(source, context, now, spans)
    except OracleError as e:
        sys.stderr.write(f"error: {e.kind}: {e.message}\n")
        return 1
    if spans:
        out = json.dumps({"text": text.decode("utf-8"), "generation": gen}, ensure_ascii=False)
        sys.stdout.buffer.write(out.encode("utf-8") + b"\n")
    else:
        sys.stdout.buffer.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
