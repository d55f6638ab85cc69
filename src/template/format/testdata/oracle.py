#!/usr/bin/env python3
"""Fills in the expected column of the format test tables from the reference engine.

Usage: oracle.py FILE.tsv...   (rewrites each file in place)

Each line is `kind<TAB>value<TAB>op<TAB>arg<TAB>expected`; this script builds the FreeMarker
template the line stands for, renders all of them in one `ftl-oracle --amplitude --batch` JVM,
and writes the oracle's output (or `ERR`) into the last column. Lines starting with `#` are kept.

kind/value name a number the way FreeMarker gets it:
  D 0.1    a Double (a JSON number with a fraction or exponent, read by Jackson)
  I 42     an Integer/Long/BigInteger (a JSON integer, read by Jackson)
  B 1.50   a BigDecimal ("1.50"?number)
  S text   a string (for op `number`: "text"?number)
  J "text"  a string given as a JSON literal, for op = a string built-in (`json_string`, `url` with
            arg `UTF-8`...) or `jackson` (UtilClass.toJsonString); the expected column is then
            JSON-encoded too
  date|time|datetime VALUE   a date: VALUE is the text to parse (op parse) or epoch millis
op/arg:
  parse PATTERN ${"VALUE"?KIND("PATTERN")?long} (no PATTERN: ${"VALUE"?KIND?long})
  format PATTERN ${(VALUE)?number_to_KIND?string("PATTERN")} (no PATTERN: the default format)
  builtin NAME  ${(VALUE)?number_to_KIND?NAME}
  fmt PATTERN   ${x?string("PATTERN")}; PATTERN `computer` means plain ${x}
  c             ${x?c}
  json          ${UtilClass.toJsonString(x)}
  + - * / % K:V ${x OP y} ${UtilClass.toJsonString(x OP y)}, y given as kind:value
  cmp K:V       ${(x < y)?c} ${(x == y)?c} ${(x > y)?c}
  int long round floor ceiling abs neg number
                ${x?OP} ${UtilClass.toJsonString(x?OP)} (neg is -(x))
"""
import json, subprocess, sys

ORACLE = '/work/shared/tools/ftl-oracle/ftl-oracle'


def operand(kind, value, name):
    if kind in 'DI':
        return f'input.{name}', value
    if kind == 'B':
        return '"' + value + '"?number', None
    if kind == 'S':
        return json.dumps(value, ensure_ascii=False), None
    raise SystemExit(f'bad kind {kind}')


def date_request(kind, value, op, arg):
    if op == 'parse':
        call = '?' + kind + ('(' + json.dumps(arg, ensure_ascii=False) + ')' if arg else '')
        t = '${' + json.dumps(value, ensure_ascii=False) + call + '?long}'
    elif op == 'format':
        fmt = '?string(' + json.dumps(arg, ensure_ascii=False) + ')' if arg else ''
        t = '${(' + value + ')?number_to_' + kind + fmt + '}'
    elif op == 'builtin':
        t = '${(' + value + ')?number_to_' + kind + '?' + arg + '}'
    else:
        raise SystemExit(f'bad date op {op}')
    return '{"template":' + json.dumps(t) + ',"input":{}}'


def string_request(value, op, arg):
    if op == 'jackson':
        t = '${UtilClass.toJsonString(input.a)}'
    elif arg:
        t = '${input.a?' + op + '(' + json.dumps(arg) + ')}'
    else:
        t = '${input.a?' + op + '}'
    return '{"template":' + json.dumps(t) + ',"input":{"a":' + value + '}}'


def request(kind, value, op, arg):
    if kind in ('date', 'time', 'datetime'):
        return date_request(kind, value, op, arg)
    if kind == 'J':
        return string_request(value, op, arg)
    x, raw_a = operand(kind, value, 'a')
    raws = {}
    if raw_a is not None:
        raws['a'] = raw_a
    if op == 'fmt':
        t = '${' + x + '}' if arg == 'computer' else '${' + x + '?string(' + json.dumps(arg, ensure_ascii=False) + ')}'
    elif op == 'c':
        t = '${' + x + '?c}'
    elif op == 'json':
        t = '${UtilClass.toJsonString(' + x + ')}'
    elif op in ('+', '-', '*', '/', '%', 'cmp'):
        k2, v2 = arg.split(':', 1)
        y, raw_b = operand(k2, v2, 'b')
        if raw_b is not None:
            raws['b'] = raw_b
        if op == 'cmp':
            t = '${(' + x + ' < ' + y + ')?c} ${(' + x + ' == ' + y + ')?c} ${(' + x + ' > ' + y + ')?c}'
        else:
            e = '(' + x + ') ' + op + ' (' + y + ')'
            t = '${' + e + '} ${UtilClass.toJsonString(' + e + ')}'
    elif op == 'neg':
        t = '${-(' + x + ')} ${UtilClass.toJsonString(-(' + x + '))}'
    else:
        t = '${' + x + '?' + op + '} ${UtilClass.toJsonString(' + x + '?' + op + ')}'
    inp = '{' + ','.join(json.dumps(k) + ':' + v for k, v in raws.items()) + '}'
    return '{"template":' + json.dumps(t) + ',"input":' + inp + '}'


def main():
    for path in sys.argv[1:]:
        lines = open(path, encoding='utf-8').read().split('\n')
        rows = [(i, l.split('\t')) for i, l in enumerate(lines) if l and not l.startswith('#')]
        req = ''.join(request(*cols[:4]) + '\n' for _, cols in rows)
        p = subprocess.run([ORACLE, '--amplitude', '--batch'], input=req.encode(), capture_output=True, check=True)
        answers = p.stdout.decode('utf-8').split('\n')
        for (i, cols), answer in zip(rows, answers):
            r = json.loads(answer)
            if 'output' not in r:
                out = 'ERR'
            elif cols[0] == 'J':
                out = json.dumps(r['output'])
            else:
                out = r['output']
            cols = cols[:4] + [out]
            lines[i] = '\t'.join(cols)
        open(path, 'w', encoding='utf-8').write('\n'.join(lines))


main()
