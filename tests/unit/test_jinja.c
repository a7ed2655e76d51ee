/* Unit test of io/jinja: each construct chat templates use renders what Python's Jinja2
 * 3.1.2 renders when configured as transformers' apply_chat_template configures it (the
 * expected strings of `cases` were produced by that Jinja2 on ctx_json and are checked in
 * here), refusals name the construct and the line, raise_exception's message, syntax and
 * runtime errors, the output / step / recursion / memory bounds, and the byte spans of
 * {% generation %} blocks. Real templates of the npm packages are compared with Jinja2 by
 * the oracle's differential test (tests/reference/jinja_oracle.py). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/jinja.h"
#include "tests/unit/check.h"

typedef struct {
    const char *name, *tpl, *want;
} Case;

/* clang-format off: generated table (template and Jinja2's output), one case per entry */
static const char *const ctx_json =
    "{\"xs\": [1, 2, 3], \"d\": {\"a\": 1, \"b\": [1, 2]}, \"s\": \"h\\u00e9llo\", \"messages\": "
    "[{\"role\": \"system\", \"content\": \"Be nice.\"}, {\"role\": \"user\", \"content\": \"Hi "
    "there\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}], \"add_generation_prompt\": "
    "true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";

static const Case cases[] = {
    {"trim_lstrip_if", "a\n  {% if true %}\n    b\n  {% endif %}\nc", "a\n    b\nc"},
    {"minus_markers", "a  {% if true -%}\n  b  {%- endif %}  c", "a  b  c"},
    {"comment_strip", "  {#- comment -#}  x", "x"},
    {"comment_lstrip_trim", "  {# comment #}\nx", "x"},
    {"plus_keeps_indent", "  {%+ if true %}x{% endif %}", "  x"},
    {"for_lines", "{% for i in xs %}\n  {{ i }}\n{% endfor %}", "  1\n  2\n  3\n"},
    {"var_minus", "{{- ' a ' -}}  \n  b", " a b"},
    {"minus_before_newline", "line1\n   {%- set x = 1 %}\nline2", "line1line2"},
    {"tab_lstrip", "\t{% if true %}tab{% endif %}", "tab"},
    {"text_before_tag", "x {% if true %}\ny{% endif %}", "x y"},
    {"all_minus", "{%- if true -%}\n  a\n{%- endif -%}", "a"},
    {"var_no_lstrip", "  {{ 1 }}\n  {% if true %}x{% endif %}", "  1\nx"},
    {"crlf_and_trailing_newline", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\n", "a\nb\n"},
    {"plus_block_end", "{% if true +%}\nx{% endif %}", "\nx"},
    {"comment_plus", "  {#+ c #}x", "  x"},
    {"comment_trailing", "a {# c #}\nb", "a b"},
    {"macro_defaults_kwargs",
     "{% macro m(a, b='x', c=none) -%}\n{{ a }}-{{ b }}-{{ c }}\n{%- endmacro %}\n{{ m(1) }}|{{ "
     "m(1, c=3) }}|{{ m(b=2, a=0) }}",
     "1-x-None|1-x-3|0-2-None"},
    {"macro_missing_arg", "{% macro m(a, b) %}[{{ a }}|{{ b is defined }}]{% endmacro %}{{ m(1) }}",
     "[1|False]"},
    {"macro_varargs_kwargs",
     "{% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, k=3) }}", "(1, 2){'k': 3}"},
    {"macro_sees_later_set", "{% macro m() %}{{ y }}{% endmacro %}{% set y = 5 %}{{ m() }}", "5"},
    {"call_caller_args",
     "{% macro outer() %}[{{ caller('arg') }}]{% endmacro %}{% call(v) outer() %}got {{ v }}{% "
     "endcall %}",
     "[got arg]"},
    {"call_scope",
     "{% set x = 5 %}{% macro m() %}{{ caller() }}{% endmacro %}{% call m() %}{% set x = 7 %}{{ x "
     "}}{% endcall %}{{ x }}",
     "75"},
    {"set_block", "{% set x %}\n  inner {{ 1 + 1 }}\n{% endset %}[{{ x }}]", "[  inner 2\n]"},
    {"set_block_filter", "{% set x | upper %}abc{% endset %}{{ x }}", "ABC"},
    {"filter_block", "{% filter upper %}hello {{ 'w' }}{% endfilter %}", "HELLO W"},
    {"set_tuple",
     "{% set a, b = [1, 2] %}{{ b }}{{ a }}{% set c, d = 'xy' %}{{ c }}{{ d }}{% set t = 1, 2 %}{{ "
     "t }}",
     "21xy(1, 2)"},
    {"set_in_for_is_local",
     "{% set x = 0 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}", "1110"},
    {"set_in_if_leaks", "{% if true %}{% set z = 3 %}{% endif %}{{ z }}", "3"},
    {"namespace",
     "{% set ns = namespace(found=false) %}{% for x in xs %}{% if x == 2 %}{% set ns.found = true "
     "%}{% endif %}{% endfor %}{{ ns.found }}{{ ns }}",
     "True<Namespace {'found': True}>"},
    {"with", "{% with x = 1, y = 2 %}{{ x + y }}{% endwith %}{{ x }}", "3"},
    {"for_items", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", "a=1;b=[1, 2];"},
    {"for_filter_else",
     "{% for x in xs if x > 1 %}{{ loop.index }}/{{ loop.length }}:{{ x }} {% else %}none{% endfor "
     "%}",
     "1/2:2 2/2:3 "},
    {"for_else", "{% for x in [] %}a{% else %}empty{% endfor %}", "empty"},
    {"for_continue", "{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% endfor %}",
     "13"},
    {"for_break", "{% for x in xs %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}", "1"},
    {"loop_vars",
     "{% for x in xs %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ "
     "loop.last }}{{ loop.cycle('a','b') }} {% endfor %}",
     "032TrueFalsea 121FalseFalseb 210FalseTruea "},
    {"loop_prev_next", "{% for x in xs %}{{ loop.previtem }},{{ loop.nextitem }};{% endfor %}",
     ",2;1,3;2,;"},
    {"nested_loops",
     "{% for x in xs %}{% for y in 'ab' %}{{ loop.index }}{{ x }}{{ y }}{% endfor %}|{{ loop.index "
     "}}{% endfor %}",
     "11a21b|112a22b|213a23b|3"},
    {"for_tuples", "{% for a, b in [(1, 2), (3, 4)] %}{{ a + b }}{% endfor %}", "37"},
    {"elif",
     "{% for x in xs %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %}{% endfor %}",
     "onetwomany"},
    {"print_stmt", "{% print 1, 'a' %}", "1a"},
    {"f_join_map_select",
     "{{ xs|join(', ') }}|{{ messages|map(attribute='role')|join(',') }}|{{ "
     "messages|selectattr('role', 'equalto', 'user')|list|length }}",
     "1, 2, 3|system,user,assistant|1"},
    {"f_rejectattr",
     "{{ messages|rejectattr('role', 'eq', 'system')|map(attribute='content')|list }}",
     "['Hi there', 'Hello!']"},
    {"f_sort",
     "{{ [3,1,2]|sort }}{{ [3,1,2]|sort(reverse=true) }}{{ ['b','A','c']|sort }}{{ "
     "['b','A','c']|sort(case_sensitive=true) }}{{ "
     "messages|sort(attribute='role')|map(attribute='role')|list }}",
     "[1, 2, 3][3, 2, 1]['A', 'b', 'c']['A', 'b', 'c']['assistant', 'system', 'user']"},
    {"f_dictsort",
     "{{ {'b':1,'a':2}|dictsort }}{{ {'b':1,'a':2}|dictsort(by='value') }}{{ "
     "{'b':1,'a':2}|dictsort(reverse=true) }}",
     "[('a', 2), ('b', 1)][('b', 1), ('a', 2)][('b', 1), ('a', 2)]"},
    {"f_unique",
     "{{ [1,2,1,3]|unique|list }}{{ ['a','A','b']|unique|list }}{{ "
     "['a','A','b']|unique(case_sensitive=true)|list }}",
     "[1, 2, 3]['a', 'b']['a', 'A', 'b']"},
    {"f_string_case",
     "{{ '  x  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ 'Hello World'|lower }}|{{ 'hello world'|upper "
     "}}|{{ 'hello WORLD'|capitalize }}|{{ \"hello-world o'neil [x(y\"|title }}",
     "x|hi|hello world|HELLO WORLD|Hello world|Hello-World O'neil [X(Y"},
    {"f_unicode_case",
     "{{ '\303\234n\303\257c\303\266d\303\251'|upper }}{{ '\303\200\303\211'|lower }}{{ "
     "'\303\251lan vital'|title }}{{ '\303\251mile'|capitalize }}",
     "\303\234N\303\217C\303\226D\303\211\303\240\303\251\303\211lan Vital\303\211mile"},
    {"f_indent",
     "{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb\\n\\nc'|indent(2, true) }}|{{ 'a\\nb\\n\\nc'|indent(2, "
     "blank=true) }}|{{ 'a\\nb'|indent('> ') }}|{{ 'a\\u2028b'|indent(2) }}",
     "a\n    b\n\n    c|  a\n  b\n\n  c|a\n  b\n  \n  c|a\n> b|a\n  b"},
    {"f_int",
     "{{ 3.7|int }}{{ '42'|int }}{{ '3.9'|int }}{{ 'x'|int }}{{ 'x'|int(5) }}{{ "
     "'0x1A'|int(base=16) }}{{ ' 1_000 '|int }}{{ true|int }}",
     "3423052610001"},
    {"f_float",
     "{{ '1.5'|float }}{{ 'x'|float }}{{ 3|float }}{{ '1e3'|float }}{{ ' inf'|float }}{{ "
     "'-nan'|float }}",
     "1.50.03.01000.0infnan"},
    {"f_list_string",
     "{{ 'abc'|list }}{{ d|list }}{{ 42|string }}{{ none|string }}{{ [1,'a']|string }}",
     "['a', 'b', 'c']['a', 'b']42None[1, 'a']"},
    {"f_abs_round",
     "{{ -3|abs }}{{ (-3)|abs }}{{ 2.5|round }}{{ 3.5|round }}{{ -2.5|round }}{{ 1.23456|round(2) "
     "}}{{ 2.675|round(2) }}{{ 1.5|round(0,'ceil') }}{{ 1.5|round(0, 'floor') }}{{ 3|round }}",
     "332.04.0-2.01.232.672.01.03"},
    {"f_default",
     "{{ undefined_x|default('dflt') }}{{ ''|default('e') }}{{ ''|default('e', true) }}{{ "
     "none|d('n') }}{{ 0|d('z', boolean=true) }}",
     "dflteNonez"},
    {"f_tojson",
     "{{ d|tojson }}{{ 'e\314\201\303\251\"\\n'|tojson }}{{ [1, 2.0, none, true, 1e100]|tojson "
     "}}{{ d|tojson(indent=2) }}{{ {}|tojson(indent=2) }}{{ "
     "{'b':1,'a':{'d':1,'c':2}}|tojson(sort_keys=true) }}{{ "
     "'\303\251\360\237\230\200'|tojson(ensure_ascii=true) }}",
     "{\"a\": 1, \"b\": [1, 2]}\"e\314\201\303\251\\\"\\n\"[1, 2.0, null, true, 1e+100]{\n  \"a\": "
     "1,\n  \"b\": [\n    1,\n    2\n  ]\n}{}{\"a\": {\"c\": 2, \"d\": 1}, \"b\": "
     "1}\"\\u00e9\\ud83d\\ude00\""},
    {"f_tojson_separators", "{{ d|tojson(separators=(',', ':')) }}{{ d|tojson(indent='\\t') }}",
     "{\"a\":1,\"b\":[1,2]}{\n\t\"a\": 1,\n\t\"b\": [\n\t\t1,\n\t\t2\n\t]\n}"},
    {"f_first_last",
     "{{ xs|first }}{{ xs|last }}{{ d|first }}{{ d|last }}{{ 'abc'|last }}{{ []|first }}", "13abc"},
    {"f_length", "{{ s|length }}{{ xs|count }}{{ d|length }}{{ nothing|length }}", "5320"},
    {"f_batch_sum",
     "{{ xs|batch(2)|list }}{{ xs|batch(2, 0)|list }}{{ xs|sum }}{{ [1.5, 2]|sum }}{{ "
     "messages|map('length')|list }}",
     "[[1, 2], [3]][[1, 2], [3, 0]]63.5[2, 2, 2]"},
    {"f_map_filter",
     "{{ xs|map('string')|map('upper')|list }}{{ ['a', 'b']|map('replace', 'a', 'z')|list }}",
     "['1', '2', '3']['z', 'b']"},
    {"f_select",
     "{{ xs|select('odd')|list }}{{ xs|reject('odd')|list }}{{ [0, 1, '', 'a']|select|list }}{{ "
     "xs|select('greaterthan', 1)|list }}",
     "[1, 3][2][1, 'a'][2, 3]"},
    {"f_selectattr",
     "{{ messages|selectattr('role', 'in', ['user', 'system'])|map(attribute='role')|list }}{{ "
     "messages|selectattr('tool_calls')|list }}{{ messages|selectattr('content', "
     "'defined')|list|length }}",
     "['system', 'user'][]3"},
    {"f_reverse_items", "{{ xs|reverse|list }}{{ 'abc'|reverse }}{{ d|items|list }}",
     "[3, 2, 1]cba[('a', 1), ('b', [1, 2])]"},
    {"f_replace",
     "{{ 'aaa'|replace('a', 'b') }}{{ 'aaa'|replace('a', 'b', 2) }}{{ 'abc'|replace('', '-') }}",
     "bbbbba-a-b-c-"},
    {"f_escape_safe", "{{ '<a href=\"x\">&\\'</a>'|e }}{{ '<b>'|safe }}{{ 1|escape }}",
     "&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt;<b>1"},
    {"m_str",
     "{{ 'hello'.startswith('he') }}{{ 'hello'.startswith(('x','h')) }}{{ 'hello'.endswith('lo') "
     "}}{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a b c'.split(' ', 1) }}{{ 'a b "
     "c'.rsplit(' ', 1) }}{{ '  a b c  '.rsplit(None, 1) }}{{ '  a b c  '.split(None, 1) }}",
     "TrueTrueTrue['a', 'b', '', 'c']['a', 'b']['a', 'b c']['a b', 'c']['  a b', 'c']['a', 'b c  "
     "']"},
    {"m_str2",
     "{{ ' xx '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  a'.lstrip() }}|{{ 'a  '.rstrip() }}|{{ "
     "\"they're bill's\".title() }}|{{ 'abc'.replace('b', 'X') }}|{{ 'hello'.find('l') }}|{{ "
     "'h\303\251llo'.find('l') }}|{{ 'hello'.rfind('l') }}|{{ 'hello'.count('l') }}|{{ "
     "'-'.join(['a','b']) }}|{{ 'ab'.upper() }}{{ 'AB'.lower() }}{{ 'ab cd'.capitalize() }}",
     "xx|hi|a|a|They'Re Bill'S|aXc|2|2|3|2|a-b|ABabAb cd"},
    {"m_dict",
     "{{ d.get('a') }}{{ d.get('zz') }}{{ d.get('zz', 5) }}{{ d.keys()|list }}{{ d.values()|list "
     "}}{{ d.items()|list }}{{ d.items() }}{{ d.keys() }}",
     "1None5['a', 'b'][1, [1, 2]][('a', 1), ('b', [1, 2])]dict_items([('a', 1), ('b', [1, "
     "2])])dict_keys(['a', 'b'])"},
    {"m_list", "{{ xs.index(2) }}{{ xs.count(3) }}", "11"},
    {"item_vs_attr",
     "{{ d['items'] is callable }}{{ s['upper']() }}{{ xs['count'](2) }}{{ messages[0]['role'] "
     "}}{{ messages[0].role }}",
     "TrueH\303\211LLO1systemsystem"},
    {"slicing",
     "{{ xs[::-1] }}{{ xs[1:] }}{{ xs[-2:] }}{{ s[1:3] }}{{ s[::-1] }}{{ s[-1] }}{{ xs[5:] }}{{ "
     "'abcdef'[::2] }}{{ 'abcdef'[-1:0:-2] }}{{ xs[-1] }}{{ s[1] }}",
     "[3, 2, 1][2, 3][2, 3]\303\251loll\303\251ho[]acefdb3\303\251"},
    {"missing_items",
     "{{ [1,2][5] }}|{{ d.nokey }}|{{ d['nokey'] }}|{{ none.x }}|{{ 'abc'.nomethod }}|{{ xs[1.0] "
     "}}|{{ xs[true] }}",
     "||||||2"},
    {"in_notin",
     "{{ 'a' in 'abc' }}{{ 2 in xs }}{{ 'a' in d }}{{ 'z' not in d }}{{ 5 not in xs }}{{ (1, 2) in "
     "[(1, 2)] }}",
     "TrueTrueTrueTrueTrueTrue"},
    {"arith",
     "{{ 1 + 2 }} {{ 1 - 2.5 }} {{ 2 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ "
     "-7 % 3 }} {{ 2 ** 10 }} {{ 2 ** 0.5 }} {{ 7.0 // 2 }} {{ -7.5 % 2 }} {{ 2**-1 }} {{ 7 // -2 "
     "}}",
     "3 -1.5 6 3.5 3 -4 1 2 1024 1.4142135623730951 3.0 0.5 0.5 -4"},
    {"precedence",
     "{{ -2**2 }} {{ -1 ** 2 }} {{ not true == false }} {{ 1 + 2 * 3 - 4 / 2 }} {{ 10 - 2 - 3 }} "
     "{{ 2 ** 3 ** 2 }}",
     "4 1 True 5.0 5 64"},
    {"seq_ops",
     "{{ 'ab' + 'cd' }}{{ 'ab' * 2 }}{{ [1] + [2,3] }}{{ 'x' ~ 1 ~ 2.5 ~ none ~ true }}{{ 'x' * -1 "
     "}}{{ [1] * 3 }}{{ 3 * 'ab' }}{{ (1,) + (2,) }}{{ true + 1 }}",
     "abcdabab[1, 2, 3]x12.5NoneTrue[1, 1, 1]ababab(1, 2)2"},
    {"compare",
     "{{ 1 == 1.0 }}{{ 'a' < 'b' }}{{ [1,2] < [1,3] }}{{ 1 != 2 }}{{ none == none }}{{ true == 1 "
     "}}{{ (1,2) == [1,2] }}{{ 1 < 2 < 3 }}{{ 1 < 3 < 2 }}{{ 3 > 2 > 2 }}",
     "TrueTrueTrueTrueTrueTrueFalseTrueFalseFalse"},
    {"and_or_not",
     "{{ 1 and 2 }}{{ 0 and 2 }}{{ 0 or 'x' }}{{ '' or none }}{{ not 0 }}{{ not [] }}{{ 'a' is "
     "string and 'b' or 'c' }}",
     "20xNoneTrueTrueb"},
    {"condexpr",
     "{{ 'yes' if true else 'no' }}{{ 'yes' if false else 'no' }}[{{ 'yes' if false }}]{{ ('a' if "
     "false) is defined }}{{ 1 if 2 if 3 else 4 }}",
     "yesno[]False1"},
    {"floats",
     "{{ 0.1 }} {{ 1.0 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1/3 }} {{ 2.5e-10 }} "
     "{{ -0.0 }} {{ 123456789.123 }} {{ 1e22 }} {{ 3.0e5 }} {{ 1.5e-5 }} {{ 1e308 * 10 }}",
     "0.1 1.0 1e+16 1000000000000000.0 0.0001 1e-05 0.3333333333333333 2.5e-10 -0.0 123456789.123 "
     "1e+22 300000.0 1.5e-05 inf"},
    {"repr",
     "{{ true }}{{ false }}{{ none }}{{ True }}{{ None }}{{ [none, true, 'a', \"b'c\", 'd\"e', "
     "\"f'g\\\"h\"] }}{{ {'a': [1, {'b': none}]} }}{{ (1,) }}{{ (1, 2) }}{{ "
     "['a\\nb\\x01\303\251\\u200b\\\\'] }}",
     "TrueFalseNoneTrueNone[None, True, 'a', \"b'c\", 'd\"e', 'f\\'g\"h']{'a': [1, {'b': "
     "None}]}(1,)(1, 2)['a\\nb\\x01\303\251\\u200b\\\\']"},
    {"string_escapes",
     "{{ \"\\t\\x41\\u00e9\\101\\\\\" }}{{ 'it\\'s' }}{{ \"q\\\"q\" }}{{ '\\d' }}{{ 'a' 'b' }}",
     "\tA\303\251A\\it'sq\"q\\dab"},
    {"int_literals",
     "{{ 0b101 }} {{ 0o17 }} {{ 0xff }} {{ 1_000 }} {{ 1.5e3 }} {{ 1_0.5 }} {{ 9223372036854775807 "
     "}}",
     "5 15 255 1000 1500.0 10.5 9223372036854775807"},
    {"braces_in_tag", "{{ '{' }}{{ {'a': {'b': 1}} }}}}", "{{'a': {'b': 1}}}}"},
    {"tests_types",
     "{{ xs is defined }}{{ zz is defined }}{{ zz is undefined }}{{ none is none }}{{ 'a' is "
     "string }}{{ 1 is number }}{{ 1.5 is number }}{{ true is number }}{{ 1 is integer }}{{ true "
     "is integer }}{{ 1.0 is float }}{{ d is mapping }}{{ xs is iterable }}{{ xs is sequence }}{{ "
     "true is boolean }}{{ true is true }}{{ false is false }}{{ 1 is not string }}",
     "TrueFalseTrueTrueTrueTrueTrueTrueTrueFalseTrueTrueTrueTrueTrueTrueTrueTrue"},
    {"tests_values",
     "{{ 2 is even }}{{ 3 is odd }}{{ 9 is divisibleby 3 }}{{ 2 is in xs }}{{ 'a' is eq 'a' }}{{ "
     "'a' is equalto 'b' }}{{ 1 is ne 2 }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ none is "
     "sameas none }}{{ xs is callable }}{{ range is callable }}{{ 3 is gt 2 }}{{ 3 is lessthan 2 "
     "}}{{ 2 is ge 2 }}{{ 2 is le 1 }}",
     "TrueTrueTrueTrueTrueFalseTrueTrueTrueTrueFalseTrueTrueFalseTrueFalse"},
    {"undefined",
     "[{{ zz }}]{{ 'abc' ~ d.nokey ~ 'x' }}{% for x in zz %}no{% endfor %}{{ zz|length }}{{ "
     "zz|list }}{% if zz %}y{% else %}n{% endif %}{% if zz is not defined %}nd{% endif %}{{ zz == "
     "zz }}{{ not zz }}",
     "[]abcx0[]nndTrueTrue"},
    {"globals",
     "{{ range(5)|list }}{{ range(1, 10, 3)|list }}{{ range(5, 0, -2)|list }}{{ dict(a=1, b=2) "
     "}}{{ namespace(a=1).a }}{{ dict([('x', 1)]) }}",
     "[0, 1, 2, 3, 4][1, 4, 7][5, 3, 1]{'a': 1, 'b': 2}1{'x': 1}"},
    {"strftime_now", "{{ strftime_now('%Y-%m-%d %H:%M:%S %A %b') }}",
     "2023-11-14 22:13:20 Tuesday Nov"},
    {"messages_idiom",
     "{% if messages[0].role == 'system' %}{% set loop_messages = messages[1:] %}{% else %}{% set "
     "loop_messages = messages %}{% endif %}{{ loop_messages|length }}{% for m in loop_messages "
     "%}{{ m.role }}{{ ',' if not loop.last }}{% endfor %}",
     "2user,assistant"},
    {"llama3_template",
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
     "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
     "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif "
     "%}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
     "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
     "<s><|start_header_id|>system<|end_header_id|>\n\nBe "
     "nice.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi "
     "there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_"
     "header_id|>assistant<|end_header_id|>\n\n"},
    {"sort_multi_attr",
     "{{ messages|sort(attribute='role,content')|map(attribute='role')|list }}{{ "
     "messages|sort(attribute='nokey')|map(attribute='role')|list }}{{ [[2, 'x'], [1, "
     "'y']]|sort(attribute='0') }}",
     "['assistant', 'system', 'user']['system', 'user', 'assistant'][[1, 'y'], [2, 'x']]"},
    {"const_slice_folds", "[{{ 'abc'['a':] }}]", "[]"},
    {"comment_open_at_end", "a  {#-", "a"},
    {"scope_loop_reads_outer",
     "{% set x = 1 %}{% for i in xs %}{{ x }}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}", "1212121"},
    {"scope_macro_local",
     "{% set x = 1 %}{% macro m() %}{{ x }}{% set x = 3 %}{{ x }}{% endmacro %}{{ m() }}{{ x }}",
     "131"},
    {"scope_loop_var_shadow",
     "{% set loop = 5 %}{{ loop }}{% for i in xs %}{{ loop.index }}{% endfor %}{{ loop }}{% for x "
     "in xs %}{% for x in 'ab' %}{{ x }}{% endfor %}{{ x }}{% endfor %}",
     "51235ab1ab2ab3"},
    {"recursive_macro",
     "{%- macro ty(spec) -%}{%- set m = {'string': 'str', 'integer': 'int'} -%}{%- if m[spec.type] "
     "is defined -%}{{ m[spec.type] }}{%- elif spec.type == 'array' -%}list[{{ ty(spec['items']) "
     "}}]{%- elif spec.type is iterable -%}Union[{%- for t in spec.type -%}{{ ty({'type': t}) }}{{ "
     "',' if not loop.last }}{%- endfor -%}]{%- else -%}Any{%- endif -%}{%- endmacro -%}{{ "
     "ty({'type': 'array', 'items': {'type': 'array', 'items': {'type': ['string', 'integer']}}}) "
     "}} {{ ty({}) }}",
     "list[list[Union[str,int]]] Union[]"},
    {"items_method_vs_key",
     "{% set p = {'type': 'array', 'items': {'type': 'string'}} %}{{ p.items.type }}|{{ "
     "p['items'].type }}",
     "|string"},
    {"empty_repeat", "{{ ([] * 10**18)|length }}{{ ('' * 10**18)|length }}", "00"},
    {"strftime_naive", "[{{ strftime_now('%z%Z') }}]{{ strftime_now('%%Y') }}", "[]%Y"},
    {"lazy_generator_args",
     "{{ nothing|selectattr|list }}{{ []|map(e=1)|list }}{{ []|select('no_such_test')|list }}",
     "[][][]"},
    {"print_scalars_loop",
     "{% for i in range(3) %}{{ i }}{{ i / 2 }}{{ i is even }}{{ none }}{% endfor %}",
     "00.0TrueNone10.5FalseNone21.0TrueNone"},
    {"raw_block",
     "a\n  {% raw %}\n  {{ x }}{% if %}\n  {% endraw %}\nb{%- raw -%}  x  {%- endraw -%}  y",
     "a\n\n  {{ x }}{% if %}\nbxy"},
};
/* clang-format on */

static json_t *load_vars(const char *js) {
    json_error_t e;
    json_t *v = json_loads(js, 0, &e);
    if (!v) {
        printf("FAIL bad test JSON: %s\n", e.text);
        exit(1);
    }
    return v;
}

/* Renders tpl with vars (JSON text) and compares with want. */
static void expect(const char *name, const char *tpl, const char *vars, const char *want) {
    JinjaErr kind;
    ErrStatus st;
    JinjaTemplate *t = jinja_compile(tpl, strlen(tpl), &kind, &st);
    CHECK_TRUE(t != NULL, "%s: compile failed (%d): %s", name, (int)kind, st.msg);
    if (!t) return;
    json_t *v = load_vars(vars);
    JinjaLimits lim = {0, 0, 1700000000};
    JinjaOutput out;
    int ok = jinja_render(t, v, &lim, &out, &kind, &st);
    CHECK_TRUE(ok, "%s: render failed (%d): %s", name, (int)kind, st.msg);
    if (ok) {
        CHECK_TRUE(out.len == strlen(want) && memcmp(out.text, want, out.len) == 0,
                   "%s:\n  got  [%s]\n  want [%s]", name, out.text, want);
        CHECK_TRUE(out.ngen == 0, "%s: %zu generation spans", name, out.ngen);
        jinja_output_free(&out);
    }
    json_decref(v);
    jinja_free(t);
}

/* Compiling or rendering tpl fails with kind and a message containing msg. */
static void expect_err_lim(const char *tpl, const JinjaLimits *lim, JinjaErr want_kind,
                           const char *msg) {
    JinjaErr kind = JINJA_OK;
    ErrStatus st;
    JinjaOutput out;
    JinjaTemplate *t = jinja_compile(tpl, strlen(tpl), &kind, &st);
    int ok = 0;
    if (t) {
        json_t *v = load_vars(ctx_json);
        ok = jinja_render(t, v, lim, &out, &kind, &st);
        if (ok) jinja_output_free(&out);
        CHECK_TRUE(ok || (out.text == NULL && out.ngen == 0), "%s: output left on failure", tpl);
        json_decref(v);
        jinja_free(t);
    }
    CHECK_TRUE(!ok && kind == want_kind && strstr(st.msg, msg),
               "%s:\n  got  ok=%d kind=%d [%s]\n  want kind=%d [..%s..]", tpl, ok, (int)kind,
               ok ? "" : st.msg, (int)want_kind, msg);
}

static void expect_err(const char *tpl, JinjaErr want_kind, const char *msg) {
    JinjaLimits lim = {0, 0, 1700000000};
    expect_err_lim(tpl, &lim, want_kind, msg);
}

static void test_cases(void) {
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect(cases[i].name, cases[i].tpl, ctx_json, cases[i].want);
    /* JSON reals stay floats, integers ints; object keys keep their order */
    expect("json_types", "{{ f }} {{ i }} {{ o }} {{ o|tojson }}",
           "{\"f\": 1.0, \"i\": 1, \"o\": {\"z\": 1, \"a\": [1.5, null, true]}}",
           "1.0 1 {'z': 1, 'a': [1.5, None, True]} {\"z\": 1, \"a\": [1.5, null, true]}");
    expect("no_vars", "x{{ y }}z", "{}", "xz");
}

static void test_refusals(void) {
    expect_err("{% include 'x' %}", JINJA_ERR_UNSUPPORTED, "line 1: unsupported: {% include %}");
    expect_err("a\n\n{{ x|wordwrap }}", JINJA_ERR_UNSUPPORTED,
               "line 3: unsupported: filter 'wordwrap'");
    expect_err("{{ x|no_such_filter }}", JINJA_ERR_UNSUPPORTED, "filter 'no_such_filter'");
    expect_err("\n{% autoescape true %}x{% endautoescape %}", JINJA_ERR_UNSUPPORTED,
               "line 2: unsupported: {% autoescape %}");
    expect_err("{{ x is escaped }}", JINJA_ERR_UNSUPPORTED, "test 'escaped'");
    expect_err("{% for x in xs recursive %}{% endfor %}", JINJA_ERR_UNSUPPORTED, "recursive");
    expect_err("{% extends 'base' %}", JINJA_ERR_UNSUPPORTED, "{% extends %}");
    expect_err("x\n{{ '%s' % 1 }}", JINJA_ERR_UNSUPPORTED, "line 2: unsupported: % string");
    expect_err("{{ '\xc3\x9f'|upper }}", JINJA_ERR_UNSUPPORTED, "case mapping of U+00DF");
    expect_err("{{ 9223372036854775807 + 1 }}", JINJA_ERR_UNSUPPORTED, "integer overflow");
    expect_err("{{ 99999999999999999999 }}", JINJA_ERR_UNSUPPORTED, "integer overflow");
    expect_err("{{ 2 ** 64 }}", JINJA_ERR_UNSUPPORTED, "integer overflow");
    expect_err("{{ xs|reverse }}", JINJA_ERR_UNSUPPORTED, "printing a generator");
    expect_err("{{ d.copy() }}", JINJA_ERR_UNSUPPORTED, "dict.copy");
    expect_err("{{ 'a{}'.format(1) }}", JINJA_ERR_UNSUPPORTED, "str.format");
    expect_err("{{ d['items'] }}", JINJA_ERR_UNSUPPORTED, "printing a function");
    expect_err("{{ d.__class__ }}", JINJA_ERR_UNSUPPORTED, "'__class__'");
    expect_err("{{ cycler(1) }}", JINJA_ERR_UNSUPPORTED, "cycler");
    expect_err("{{ f(*xs) }}", JINJA_ERR_UNSUPPORTED, "*args");
    expect_err("{{ ('<'|safe) + '<' }}", JINJA_ERR_UNSUPPORTED, "|safe");
}

static void test_errors(void) {
    expect_err("{% if x %}", JINJA_ERR_SYNTAX, "line 1: unexpected end of template");
    expect_err("a\n{% endfor %}", JINJA_ERR_SYNTAX, "line 2: Encountered unknown tag 'endfor'");
    expect_err("{{ 1 + }}", JINJA_ERR_SYNTAX, "line 1:");
    expect_err("{% do xs %}", JINJA_ERR_SYNTAX, "unknown tag 'do'");
    expect_err("{% break %}", JINJA_ERR_SYNTAX, "'break' outside loop");
    expect_err("{% for x in xs %}{% macro m() %}{% break %}{% endmacro %}{% endfor %}",
               JINJA_ERR_SYNTAX, "'break' outside loop");
    expect_err("ok \xff", JINJA_ERR_SYNTAX, "invalid UTF-8");
    expect_err("{{ 'abc }}", JINJA_ERR_SYNTAX, "unexpected end of string");
    expect_err("{# x", JINJA_ERR_SYNTAX, "missing end of comment tag");
    expect_err("{% raw %}x", JINJA_ERR_SYNTAX, "Missing end of raw directive");
    expect_err("{{ (1 }}", JINJA_ERR_SYNTAX, "");
    expect_err("{{ x is defined is defined }}", JINJA_ERR_SYNTAX, "");
    expect_err("{% macro m(a=1, b) %}{% endmacro %}", JINJA_ERR_SYNTAX, "non-default argument");
    expect_err("{{ zz.attr }}", JINJA_ERR_RUNTIME, "'zz' is undefined");
    expect_err("{{ zz + 1 }}", JINJA_ERR_RUNTIME, "'zz' is undefined");
    expect_err("{{ zz() }}", JINJA_ERR_RUNTIME, "'zz' is undefined");
    expect_err("{{ xs.append(4) }}", JINJA_ERR_RUNTIME, "unsafe");
    expect_err("{% set _ = d.update({}) %}", JINJA_ERR_RUNTIME, "unsafe");
    expect_err("{{ 1 / 0 }}", JINJA_ERR_RUNTIME, "division by zero");
    expect_err("{{ 1 // 0 }}", JINJA_ERR_RUNTIME, "by zero");
    expect_err("{{ 2 ~ 3 + 4 }}", JINJA_ERR_RUNTIME, "unsupported operand");
    expect_err("{{ -xs|length }}", JINJA_ERR_RUNTIME, "unary -");
    expect_err("{{ 1 < 'a' }}", JINJA_ERR_RUNTIME, "not supported between");
    expect_err("{{ range(100001)|length }}", JINJA_ERR_RUNTIME, "Range too big");
    expect_err("{% set a, b = [1] %}", JINJA_ERR_RUNTIME, "not enough values to unpack");
    expect_err("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", JINJA_ERR_RUNTIME,
               "takes not more than 1 argument");
    expect_err("{% macro m(a) %}{% endmacro %}{{ m(b=2) }}", JINJA_ERR_RUNTIME,
               "no keyword argument 'b'");
    expect_err("{% set x = 1 %}{% set x.a = 2 %}", JINJA_ERR_RUNTIME, "non-namespace");
    expect_err("{{ 5|length }}", JINJA_ERR_RUNTIME, "has no len()");
    expect_err("{{ d|tojson }}{{ zz|tojson }}", JINJA_ERR_RUNTIME, "not JSON serializable");
    expect_err("{{ 'a'.split('') }}", JINJA_ERR_RUNTIME, "empty separator");
    expect_err("{{ xs[::0] }}", JINJA_ERR_RUNTIME, "slice step cannot be zero");
    expect_err("{{ xs[zz:] }}", JINJA_ERR_RUNTIME, "slice indices must be integers");
    expect_err("{{ d[1:2] }}", JINJA_ERR_RUNTIME, "unhashable type: 'slice'");
    expect_err("{{ nope|int }}", JINJA_ERR_RUNTIME, "'nope' is undefined");
    expect_err("{{ nope|float }}", JINJA_ERR_RUNTIME, "'nope' is undefined");
    expect_err("{{ nope|indent }}", JINJA_ERR_RUNTIME, "'nope' is undefined");
    expect_err("{{ [1, 'a']|sort }}", JINJA_ERR_RUNTIME, "not supported between");
    expect_err("{% macro m() %}x{% endmacro %}{% call m() %}y{% endcall %}", JINJA_ERR_RUNTIME,
               "special caller argument");
    expect_err("{% for x in xs %}{% generation %}{% break %}{% endgeneration %}{% endfor %}",
               JINJA_ERR_SYNTAX, "'break' outside loop");
    /* raise_exception: the message only, as the template wrote it */
    JinjaErr kind;
    ErrStatus st;
    JinjaOutput out;
    const char *tpl =
        "x\n{{ raise_exception('Conversation roles must alternate user/assistant') }}";
    JinjaTemplate *t = jinja_compile(tpl, strlen(tpl), &kind, &st);
    json_t *v = load_vars("{}");
    int ok = t && jinja_render(t, v, NULL, &out, &kind, &st);
    CHECK_TRUE(!ok && kind == JINJA_ERR_RAISED &&
                   strcmp(st.msg, "Conversation roles must alternate user/assistant") == 0,
               "raise_exception: ok=%d kind=%d [%s]", ok, (int)kind, st.msg);
    json_decref(v);
    jinja_free(t);
}

static void test_limits(void) {
    JinjaLimits steps = {0, 1000000, 0};
    expect_err_lim("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                   "{% endfor %}",
                   &steps, JINJA_ERR_LIMIT, "step limit: more than 1000000 evaluation steps");
    expect_err("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", JINJA_ERR_LIMIT,
               "recursion limit");
    expect_err("{% macro m() %}{{ caller() }}{% endmacro %}{% macro r() %}{% call m() %}"
               "{{ r() }}{% endcall %}{% endmacro %}{{ r() }}",
               JINJA_ERR_LIMIT, "recursion limit");
    /* scans that are not evaluation steps count too: 'in' over a long list in a loop */
    expect_err_lim("{% set r = range(100000)|list %}{% for i in range(100000) %}"
                   "{% if -1 in r %}{% endif %}{% endfor %}",
                   &steps, JINJA_ERR_LIMIT, "step limit");
    expect_err_lim("{{ (range(100000)|list * 10)|unique|list|length }}", &steps, JINJA_ERR_LIMIT,
                   "step limit");
    JinjaLimits small = {1000, 0, 0};
    expect_err_lim("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", &small, JINJA_ERR_LIMIT,
                   "output limit: more than 1000 bytes");
    expect_err_lim("{% set ns = namespace(s='x') %}{% for i in range(64) %}"
                   "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                   &small, JINJA_ERR_LIMIT, "memory limit");
    expect_err("{{ 'a' * 1000000000000 }}", JINJA_ERR_LIMIT, "memory limit");
    /* the parser bounds nesting: no stack overflow on deep input */
    size_t n = 300;
    char *deep = malloc(2 * n + 16);
    strcpy(deep, "{{ ");
    memset(deep + 3, '(', n);
    deep[3 + n] = '1';
    memset(deep + 4 + n, ')', n);
    strcpy(deep + 4 + 2 * n, " }}");
    expect_err(deep, JINJA_ERR_SYNTAX, "too deeply nested");
    free(deep);
    char *ifs = malloc(300 * 24 + 1), *q = ifs;
    for (int i = 0; i < 300; i++)
        q += sprintf(q, "{%% if 1 %%}");
    for (int i = 0; i < 300; i++)
        q += sprintf(q, "{%% endif %%}");
    expect_err(ifs, JINJA_ERR_SYNTAX, "too deeply nested");
    free(ifs);
    /* a long left-associative chain is flat in the parser but deep to evaluate */
    char *chain = malloc(5 * 3000 + 16);
    q = chain + sprintf(chain, "{{ 1");
    for (int i = 0; i < 3000; i++)
        q += sprintf(q, " + 1");
    strcpy(q, " }}");
    expect_err(chain, JINJA_ERR_LIMIT, "recursion limit");
    free(chain);
}

/* Renders tpl (vars ctx_json) and checks the text and that span k covers want[k]. */
static void expect_spans(const char *name, const char *tpl, const char *text,
                         const char *const *want, size_t nwant) {
    JinjaErr kind;
    ErrStatus st;
    JinjaOutput out;
    JinjaTemplate *t = jinja_compile(tpl, strlen(tpl), &kind, &st);
    CHECK_TRUE(t && jinja_has_generation(t), "%s: compile: %s", name, st.msg);
    if (!t) return;
    json_t *v = load_vars(ctx_json);
    int ok = jinja_render(t, v, NULL, &out, &kind, &st);
    CHECK_TRUE(ok, "%s: render: %s", name, st.msg);
    if (ok) {
        CHECK_TRUE(strcmp(out.text, text) == 0, "%s: text [%s]", name, out.text);
        CHECK_TRUE(out.ngen == nwant, "%s: %zu spans, want %zu", name, out.ngen, nwant);
        for (size_t i = 0; i < out.ngen && i < nwant; i++) {
            const JinjaSpan *g = &out.gen[i];
            CHECK_TRUE(g->start <= g->end && g->end <= out.len &&
                           g->end - g->start == strlen(want[i]) &&
                           memcmp(out.text + g->start, want[i], g->end - g->start) == 0,
                       "%s: span %zu [%zu, %zu) want [%s]", name, i, g->start, g->end, want[i]);
        }
        jinja_output_free(&out);
    }
    json_decref(v);
    jinja_free(t);
}

static void test_generation(void) {
    const char *tpl =
        "{% for m in messages %}\n"
        "{% if m.role == 'assistant' %}\n"
        "A: {% generation %}{{ m.content }}{{ eos_token }}{% endgeneration %}\n\n"
        "{% else %}\n"
        "{{ m.role }}: {{ m.content }}\n"
        "{% endif %}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}A:{% generation %}{% endgeneration %}{% endif %}";
    const char *want[] = {"Hello!</s>", ""};
    expect_spans("generation", tpl, "system: Be nice.\nuser: Hi there\nA: Hello!</s>\nA:", want, 2);
    /* nested blocks: each run is reported when it ends (transformers' order) */
    const char *want2[] = {"b", "abc"};
    expect_spans("nested",
                 "{% generation %}a{% generation %}b{% endgeneration %}c"
                 "{% endgeneration %}",
                 "abc", want2, 2);
    expect_err("{% macro m() %}{% generation %}x{% endgeneration %}{% endmacro %}{{ m() }}",
               JINJA_ERR_UNSUPPORTED, "generation");
    JinjaErr kind;
    ErrStatus st;
    JinjaTemplate *t = jinja_compile("{{ x }}", 7, &kind, &st);
    CHECK_TRUE(t && !jinja_has_generation(t), "has_generation on a template without one");
    jinja_free(t);
}

int main(void) {
    test_cases();
    test_refusals();
    test_errors();
    test_limits();
    test_generation();
    return check_finish();
}
