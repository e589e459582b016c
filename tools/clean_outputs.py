"""Clean the stored outputs of notebooks: `python tools/clean_outputs.py [--check] [NOTEBOOK ...]`.

What a reader of the docs should see of a cell's output is its final state, not the way it got there:
- progress bars: fastprogress's console mode writes every update as `\\r` + the bar again, which a browser (and
  `nbdev-docs`) draws as one line per update. `\\r` is replayed the way a terminal does (each one returns to the
  start of the line, later text overwrites earlier), then the bars left over are dropped; the training table
  and the printed lines stay. In HTML outputs (fastprogress's notebook mode) the `<progress>` bars are dropped.
- library warnings (`path/to/module.py:123: SomeWarning: message` and the source line Python prints after it);
- machine paths: `.../site-packages/` prefixes, the data folder and the author's working folders.

With no notebook named it cleans every notebook in `nbs/`; `--check` changes nothing and fails (exit status 1)
when a notebook would change. `tools/build_site.py` applies the same cleaning to what it renders.
"""
import argparse, json, re, sys
from pathlib import Path

# a fastprogress bar, console mode: `Epoch 1/3 : |████------| 10.00% [1/10 00:01<00:09]` (also what the hook flags)
_re_bar = re.compile(r'\|[█-]{5,}\|')
_re_warning = re.compile(r'^\S.*?:\d+: \w*Warning: ')  # Python's `showwarning` format: `file:line: Category: message`
_re_site = re.compile(r'''(?<![\w.~-])(?:[A-Za-z]:)?(?:[/\\][^\s/\\:'"<>]+)*[/\\](?:site|dist)-packages[/\\]''')
_re_data = re.compile(r'''(?<![\w.~-])(?:/[^\s/:'"<>]+)*/chest_xray(?=[/'"\s)<]|$)''')   # the data folder, wherever it lies
_re_work = re.compile(r'(?<![\w.~-])/work/(?=\w)')
_re_home = re.compile(r'(?<![\w.~-])(?:/home/[^\s/]+/|/Users/[^\s/]+/|/root/)(?=[\w.])')  # a home folder: ~/ (~/.cache/...)
_re_hardware = re.compile(r'(?:CPU|GPU) [^;\n]*; Python [\d.]+, torch \S+, fastai \S+, xray_fastai \S+, \S+ \S+?(?=\.?\s|\.?$)')  # `core.hardware()`
_re_tmp = re.compile(r'/tmp/tmp\w+/')  # a `tempfile.mkdtemp` folder: the name of what is in it is what a reader needs
_machine_paths = [(_re_site, ''), (_re_data, 'path/to/chest_xray'), (_re_work, ''), (_re_home, '~/'), (_re_tmp, ''), (_re_hardware, 'the machine it ran on')]
# what the checks (this tool's and the site's test) call unclean: the hook's pattern, and machine paths
re_unclean = re.compile(r'\|[█-]{20,}\||\b\w*Warning: |(UserWarning|FutureWarning|RuntimeWarning|site-packages)|\r'
                        r'|/work/|/home/|/Users/|/root/')

def replay_cr(text:str) -> str:
    "`text` as a terminal shows it: every `\\r` returns to the start of its line, later characters overwrite earlier ones"
    out = []
    for line in text.replace('\r\n', '\n').split('\n'):
        buf, pos = [], 0
        for seg_i, seg in enumerate(line.split('\r')):
            if seg_i: pos = 0
            for ch in seg:
                if pos < len(buf): buf[pos] = ch
                else: buf.append(ch)
                pos += 1
        out.append(''.join(buf))
    return '\n'.join(out)

def _is_bar_line(line:str) -> bool:
    "A progress bar, or what is left of one after it was cleared (`█`, `Epoch 1/3 :` and spaces)"
    s = line.strip()
    return bool(_re_bar.search(s)) or (bool(line) and re.fullmatch(r'[█\s]*(Epoch \d+/\d+ :)?[█\s]*', line) is not None)

def drop_warnings(text:str) -> str:
    "`text` without Python warnings: the `file:line: Category: message` line and the indented source line(s) after it"
    out, skipping = [], False
    for line in text.split('\n'):
        if _re_warning.match(line): skipping = True; continue
        if skipping and line[:1].isspace() and line.strip(): continue
        skipping = False
        out.append(line)
    return '\n'.join(out)

def machine_paths(text:str) -> str:
    "`text` with the paths of the machine it ran on made generic"
    for pat, repl in _machine_paths: text = pat.sub(repl, text)
    return text

_re_better = re.compile(r'Better model found at epoch \d+ with \S+ value: \S+\.')  # fastai's SaveModelCallback; the library's is quiet now

def clean_text(text:str) -> str:
    "A stream output as a reader should see it: progress bars at their final state and dropped, no fastai log lines, no warnings, no machine paths"
    ends_nl = text.endswith(('\n', '\r'))
    lines = [l.rstrip() for l in drop_warnings(replay_cr(text)).split('\n')]
    lines = [l for l in lines if not _is_bar_line(l) and not _re_better.fullmatch(l)]
    while lines and not lines[-1]: lines.pop()
    res = machine_paths('\n'.join(lines))
    return res + '\n' if res and ends_nl else res

_re_html_bar = re.compile(r'<div>\s*<progress\b[^>]*>\s*</progress>[^<]*</div>|<progress\b[^>]*>\s*</progress>[^<]*', re.S)
_re_bar_style = re.compile(r'<style>[^<]*\bprogress\b[^<]*</style>', re.S)

def clean_html(text:str) -> str:
    "An HTML output without fastprogress's bars (and their style) and without machine paths"
    return machine_paths(_re_bar_style.sub('', _re_html_bar.sub('', text)))

def _get(v) -> str: return ''.join(v) if isinstance(v, list) else v
def _put(v, like):
    "`v` stored the way `like` was: a list of lines (as in .ipynb files) or one string"
    return v.splitlines(keepends=True) if isinstance(like, list) else v

def clean_output(o:dict):
    "Output `o` cleaned in place; `None` when nothing is left of it"
    kind = o.get('output_type')
    if kind == 'stream':
        text = clean_text(_get(o['text']))
        if not text.strip(): return None
        o['text'] = _put(text, o['text'])
    elif kind == 'error':
        o['traceback'] = [machine_paths(t) for t in o.get('traceback', [])]
    elif kind in ('display_data', 'execute_result'):
        data = o.get('data', {})
        if 'text/html' in data:
            html = clean_html(_get(data['text/html']))
            if not html.strip():
                if kind == 'display_data' and set(data) <= {'text/html', 'text/plain'}: return None  # a bar alone
                del data['text/html']
            else: data['text/html'] = _put(html, data['text/html'])
        for mime in ('text/plain', 'text/markdown'):
            if mime in data: data[mime] = _put(machine_paths(replay_cr(_get(data[mime]))), data[mime])
    return o

def clean_nb(nb) -> bool:
    "Clean every output of notebook `nb` (a dict, as read from JSON) in place; whether anything changed"
    before = json.dumps(nb, sort_keys=True, default=repr)
    for c in nb.get('cells', []):
        if c.get('cell_type') == 'code' and 'outputs' in c:
            c['outputs'] = [o for o in (clean_output(o) for o in c['outputs']) if o is not None]
    return json.dumps(nb, sort_keys=True, default=repr) != before

def unclean_outputs(nb) -> list:
    "Where notebook `nb`'s outputs still show progress bars, warnings or machine paths: `cell N: match`"
    res = []
    for i, c in enumerate(nb.get('cells', [])):
        for o in c.get('outputs', []):
            texts = [_get(o.get('text', ''))] + ['\n'.join(o.get('traceback', []))]
            texts += [_get(v) for k, v in o.get('data', {}).items() if k.startswith('text/')]
            res += [f'cell {i}: {m[0]!r}' for t in texts for m in [re_unclean.search(t)] if m]
    return res

def clean_file(path:Path, check:bool=False) -> bool:
    "Clean notebook `path` (rewritten only if it changes; not at all when `check`); whether it needed cleaning"
    nb = json.loads(Path(path).read_text(encoding='utf-8'))
    changed = clean_nb(nb)
    if changed and not check:
        Path(path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    return changed

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='*', type=Path, help="notebooks to clean (default: every notebook in nbs/)")
    p.add_argument('--check', action='store_true', help='change nothing; fail if a notebook needs cleaning')
    args = p.parse_args(argv)
    nbs = args.notebooks or sorted((Path(__file__).parents[1]/'nbs').glob('*.ipynb'))
    changed = [f for f in nbs if clean_file(f, args.check)]
    for f in changed: print(f"{'needs cleaning' if args.check else 'cleaned'}: {f}")
    left = {f: u for f in nbs for u in [unclean_outputs(json.loads(Path(f).read_text(encoding='utf-8')))] if u}
    for f, u in left.items(): print(f'{f}: still unclean outputs (fix by hand): ' + '; '.join(u[:5]))
    return 1 if (args.check and changed) or left else 0

if __name__ == '__main__': sys.exit(main())
