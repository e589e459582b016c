"""Build the documentation site into `_site/` without Quarto: `python tools/build_site.py` (`--serve`: then preview it).

The notebooks go through nbdev's own docs processing (`FilterDefaults`: frontmatter, `show_doc` cells added
after every exported function and class and executed, hidden cells and exported sources removed, links to
symbols added), the same steps `nbdev-docs` runs before handing the notebooks to Quarto. Only imports,
exported cells and `show_doc` cells are executed; every other output (figures included) is the one stored
in the notebook. Each figure's `<img>` carries what the figure check of the run that drew it recorded
(`data-outlier-axes`, from the output's `xray_outlier_axes` metadata; see `xray_fastai.core.outlier_axes`).
The processed notebooks are then written as static HTML pages, one per chapter in `sidebar.yml`'s order, with
a chapter list, an in-page table of contents and previous/next links.
"""
import argparse, ast, base64, hashlib, html, json, os, re, shutil, sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import yaml
from fastcore.nbio import read_nb
from latex2mathml.converter import convert as latex2mathml
from markdown_it import MarkdownIt
from mdit_py_plugins.attrs import attrs_plugin
from mdit_py_plugins.dollarmath import dollarmath_plugin
from nbdev.config import get_config, nbpath2html
from nbdev.processors import FilterDefaults, exec_show_docs, _show_docs
from nbdev.quarto import nbdev_sidebar
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

sys.path.insert(0, str(Path(__file__).parent))
from clean_outputs import clean_nb

_doc_dirs = {'export', 'exports', 'exporti', 'exec_doc'}

def _is_doc_cell(cell) -> bool:
    "Cells `show_doc` needs: exported code, pure imports and `show_doc` calls"
    trees = cell.parsed_() or []
    if cell.directives_.keys() & _doc_dirs: return True
    return bool(trees) and all(isinstance(t, (ast.Import, ast.ImportFrom)) or t in _show_docs(trees) for t in trees)

class exec_doc_cells(exec_show_docs):
    "nbdev's `exec_show_docs`, restricted to the cells `show_doc` needs: stored outputs stay as they are"
    def __call__(self, cell):
        if cell.cell_type == 'code' and cell.source and _is_doc_cell(cell): super().__call__(cell)

class SiteFilter(FilterDefaults):
    "nbdev's docs processors, with `exec_doc_cells` in place of `exec_show_docs`"
    def base_procs(self): return [exec_doc_cells if p is exec_show_docs else p for p in super().base_procs()]

def process_nb(path:Path):
    "`path` read and processed as `nbdev-docs` does; returns the notebook and its frontmatter"
    nb = read_nb(path)
    SiteFilter()(nb)
    clean_nb(nb)  # progress bars at their final state, no warnings, no machine paths (also in the re-executed doc cells)
    return nb, nb.frontmatter_

def chapter_files(nbs:Path) -> list:
    "Notebooks in the order of `sidebar.yml`, regenerated from `nbs/` the way `nbdev-docs` does"
    with redirect_stdout(StringIO()) as out: nbdev_sidebar.__wrapped__(path=nbs, printit=True, force=True)
    def flat(items):
        for o in items:
            if isinstance(o, str): yield o
            elif isinstance(o, dict): yield from flat(o.get('contents', []))
    files = flat(yaml.safe_load(out.getvalue())['website']['sidebar']['contents'])
    return [nbs/f for f in files if f.endswith('.ipynb')]

# ---- markdown and code

def _highlight(code:str, lang:str='python', attrs:str='', cls:str='highlight') -> str:  # `attrs`: markdown-it's signature
    "`code` coloured by Pygments, as a `<pre>` block (also markdown-it's `highlight` hook)"
    try: lexer = get_lexer_by_name(lang or 'text')
    except ClassNotFound: lexer = get_lexer_by_name('text')
    return f'<pre class="{cls}"><code>{highlight(code, lexer, HtmlFormatter(nowrap=True))}</code></pre>'


def slug(text:str) -> str:
    "Heading id as Quarto makes it, so nbdev's symbol links (`page.html#name.lower()`) find it"
    s = re.sub(r'[^\w\s.-]', '', text.strip().lower())
    return re.sub(r'\s+', '-', s)

_re_fdiv_open, _re_fdiv_close = re.compile(r'^:::+\s*\{(.*)\}\s*$'), re.compile(r'^:::+\s*$')

def _fenced_divs(md:str) -> str:
    "Quarto's `::: {.callout-note}` blocks as plain `<div>`s"
    def line(l):
        if m := _re_fdiv_open.match(l):
            cls = ' '.join(c[1:] for c in m[1].split() if c.startswith('.'))
            return f'\n<div class="{html.escape(cls)}">\n'
        return '\n</div>\n' if _re_fdiv_close.match(l) else l
    return '\n'.join(line(l) for l in md.splitlines())

def _math(tex:str, opts:dict) -> str:
    return latex2mathml(tex, display='block' if opts.get('display_mode') else 'inline')

class Renderer:
    "Markdown to HTML with heading ids (collected for the table of contents) and links rewritten for the site"
    def __init__(self, links:dict, doc_url:str):
        self.links, self.doc_url = links, doc_url
        self.md = MarkdownIt('commonmark', {'html': True, 'highlight': _highlight}).enable(['table', 'strikethrough'])
        # $...$ and $$...$$ as MathML, which browsers draw without MathJax (pandoc's rules: no space inside, no digit after)
        dollarmath_plugin(self.md, allow_space=False, allow_digits=False, renderer=_math)
        attrs_plugin(self.md)  # pandoc's `[source](url){target="_blank"}` in show_doc entries
        self.md.core.ruler.push('site', self._rewrite)
        self.reset()

    def reset(self, api:set=()):
        "Start a page whose API entries are `api`: their headings get the plain ids nbdev's links point at"
        self.ids, self.toc, self.api, self.in_api = set(), [], set(api), False

    def href(self, url:str) -> str:
        "Links to the hosted docs and to notebooks as links between the site's pages"
        if url.startswith(self.doc_url): url = url[len(self.doc_url):]
        page, sep, frag = url.partition('#')
        if page.endswith('.ipynb') and '/' not in page: page = self.links.get(page, page)
        return page + sep + frag

    def _rewrite(self, state):
        toks = state.tokens
        for i, t in enumerate(toks):
            if t.type == 'heading_open':
                text = ''.join(c.content for c in toks[i+1].children if c.type in ('text', 'code_inline'))
                hid, n = slug(text) or 'section', 1
                while hid in self.ids or (hid in self.api and not self.in_api): hid, n = f'{slug(text)}-{n}', n+1
                self.ids.add(hid); t.attrSet('id', hid)
                if t.tag == 'h2': self.toc.append((hid, text))
            if t.type == 'inline':
                for c in t.children or []:
                    if c.type == 'link_open': c.attrSet('href', self.href(c.attrGet('href') or ''))

    def __call__(self, md:str, api=False) -> str:
        self.in_api = api
        return self.md.render(_fenced_divs(md))

# ---- notebook cells

_re_directive = re.compile(r'^#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def directives(source:str):
    "Quarto directives left in a processed cell (`#| key: value`), and the code without them"
    d, lines = {}, source.splitlines()
    while lines and (m := _re_directive.match(lines[0])):
        d[m[1]] = m[2].strip('"\'') or 'true'
        lines.pop(0)
    return d, '\n'.join(lines)

def _text(v) -> str: return ''.join(v) if isinstance(v, list) else v
_re_ansi = re.compile(r'\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])')
def _pre(text:str, cls:str) -> str: return f'<pre class="{cls}">{html.escape(_re_ansi.sub("", text))}</pre>'

class Page:
    "One chapter: its cells as HTML; figures written to `figures/`, named by content"
    def __init__(self, md:Renderer, out:Path):
        self.md, self.out = md, out

    def figure(self, data:str, ext:str, alt:str, outlier_axes:list=None) -> str:
        "A figure's `<img>`; `outlier_axes`: what the notebook run's check (`core.outlier_axes`) said of it, None if unchecked"
        raw = data.encode() if ext == 'svg' else base64.b64decode(data)
        name = f'figures/{hashlib.sha256(raw).hexdigest()[:16]}.{ext}'
        (self.out/name).write_bytes(raw)
        check = '' if outlier_axes is None else f' data-outlier-axes="{html.escape(json.dumps(list(outlier_axes)))}"'
        # the picture links to its file: a wide figure shown at the column's width opens at full size
        return f'<figure><a href="{name}" title="open the full-size picture"><img src="{name}" alt="{html.escape(alt)}"{check}></a></figure>'

    def output(self, o, d:dict) -> str:
        if o.output_type == 'stream': return _pre(_text(o.text), f'output {o.name}')
        if o.output_type == 'error': return _pre('\n'.join(o.traceback), 'output error')
        data = o.get('data', {})
        if d.get('output') == 'asis' and 'text/markdown' in data:
            return f'<div class="api">{self.md(_text(data["text/markdown"]), api=True)}</div>'
        alt = d.get('fig-cap') or d.get('fig-alt') or 'figure'
        for mime, ext in (('image/png', 'png'), ('image/jpeg', 'jpg'), ('image/svg+xml', 'svg')):
            if mime in data: return self.figure(_text(data[mime]), ext, alt, o.get('metadata', {}).get('xray_outlier_axes'))
        if 'text/html' in data: return f'<div class="output html">{_text(data["text/html"])}</div>'
        if 'text/markdown' in data: return f'<div class="output markdown">{self.md(_text(data["text/markdown"]))}</div>'
        if 'text/plain' in data: return _pre(_text(data['text/plain']), 'output')
        return ''

    def cell(self, cell) -> str:
        if cell.cell_type == 'markdown': return self.md(cell.source)
        if cell.cell_type != 'code': return ''
        d, code = directives(cell.source)
        if d.get('include') == 'false': return ''
        parts = []
        if code.strip() and d.get('echo') != 'false':
            src = _highlight(code, cls='source highlight')
            if 'code-fold' in d: src = f'<details><summary>{html.escape(d.get("code-summary", "Code"))}</summary>{src}</details>'
            parts.append(src)
        if d.get('output') != 'false': parts += [self.output(o, d) for o in cell.get('outputs', [])]
        return f'<div class="cell">{"".join(parts)}</div>' if any(parts) else ''

# ---- site

_re_api_heading = re.compile(r'^#{2,4} (\S+)\s*$', re.M)

def api_names(nb) -> set:
    "Heading ids of the `show_doc` entries in processed notebook `nb`"
    return {slug(m) for c in nb.cells if c.cell_type == 'code' and directives(c.source)[0].get('output') == 'asis'
            for o in c.get('outputs', []) for m in _re_api_heading.findall(_text(o.get('data', {}).get('text/markdown', '')))}

def _nav(chapters:list, current:str) -> str:
    active = lambda page: ' class="active"' if page == current else ''
    items = ''.join(f'<li{active(page)}><a href="{page}">{html.escape(title)}</a></li>' for page, title in chapters)
    return f'<nav class="sidebar" aria-label="Chapters"><ul>{items}</ul></nav>'

def _pager(chapters:list, i:int) -> str:
    prev = f'<a class="prev" rel="prev" href="{chapters[i-1][0]}">← {html.escape(chapters[i-1][1])}</a>' if i > 0 else '<span></span>'
    nxt = f'<a class="next" rel="next" href="{chapters[i+1][0]}">{html.escape(chapters[i+1][1])} →</a>' if i+1 < len(chapters) else '<span></span>'
    return f'<nav class="pager" aria-label="Previous and next chapter">{prev}{nxt}</nav>'

def _toc(toc:list) -> str:
    if not toc: return ''
    items = ''.join(f'<li><a href="#{hid}">{html.escape(text)}</a></li>' for hid, text in toc)
    return f'<aside class="toc"><h2>On this page</h2><ul>{items}</ul></aside>'

_page = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – {site}</title><link rel="icon" href="data:,"><meta name="description" content="{desc}"><link rel="stylesheet" href="site.css"></head>
<body><header class="topbar"><a class="site-title" href="index.html">{site}</a><a class="repo" href="{repo}">Repository</a></header>
<div class="layout">{nav}<main id="content"><h1 class="title">{title}</h1><p class="description">{desc_html}</p>
{body}{pager}</main>{toc}</div></body></html>
"""

_css = """
body { margin: 0; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #212529; }
a { color: #1a5fb4; text-decoration: none; } a:hover { text-decoration: underline; }
.topbar { display: flex; justify-content: space-between; align-items: center; padding: .7rem 1.5rem; background: #2c3e50; }
.topbar a { color: #fff; } .site-title { font-weight: 600; font-size: 1.2rem; }
.layout { display: grid; grid-template-columns: 13rem minmax(0, 1fr) 12rem; gap: 1.8rem; max-width: 90rem; margin: 0 auto; padding: 0 1.5rem; }
.sidebar, .toc { position: sticky; top: 0; align-self: start; max-height: 100vh; overflow-y: auto; padding-top: 1.5rem; font-size: .92rem; }
.sidebar ul, .toc ul { list-style: none; padding: 0; margin: 0; }
.sidebar li a { display: block; padding: .3rem .6rem; border-radius: 4px; color: #343a40; }
.sidebar li.active a { background: #e7f1ff; color: #1a5fb4; font-weight: 600; }
.toc h2 { font-size: .8rem; text-transform: uppercase; letter-spacing: .05em; color: #6c757d; margin: 0 0 .5rem; }
.toc li a { display: block; padding: .15rem 0; color: #495057; }
main { padding: 1.5rem 0 3rem; min-width: 0; }
h1.title { margin-bottom: .2rem; } p.description { color: #6c757d; font-size: 1.1rem; margin-top: 0; }
h2 { border-bottom: 1px solid #dee2e6; padding-bottom: .2rem; margin-top: 2.2rem; }
.api h3 { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 1.15rem; margin-top: .3rem; }
.api pre { white-space: pre-wrap; } .api hr { margin-top: 2.5rem; }
hr { border: 0; border-top: 1px solid #dee2e6; margin: 2rem 0 1rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .88em; background: #f6f8fa; padding: .1em .25em; border-radius: 3px; }
pre { background: #f6f8fa; border: 1px solid #e9ecef; border-radius: 6px; padding: .7rem .9rem; overflow-x: auto; font-size: .85rem; line-height: 1.45; }
pre code { background: none; padding: 0; font-size: inherit; }
pre.output { background: #fff; border-color: #dee2e6; border-left: 3px solid #adb5bd; }
pre.stderr { background: #fff8e6; } pre.error { background: #fdecea; }
.cell { margin: 1rem 0; } details summary { cursor: pointer; color: #6c757d; font-size: .9rem; }
figure { margin: .8rem 0; } figure img { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #dee2e6; padding: .3rem .6rem; text-align: left; } thead th { background: #f1f3f5; }
.output.html { overflow-x: auto; max-width: 100%; } .output.html table { font-size: .82rem; }
.callout-note, .callout-tip, .callout-warning, .callout-important { border-left: 4px solid #1a5fb4; background: #f1f6fd; padding: .2rem 1rem; margin: 1rem 0; }
.callout-warning, .callout-important { border-color: #e5a50a; background: #fdf8ec; }
.pager { display: flex; justify-content: space-between; gap: 1rem; margin-top: 3rem; padding-top: 1rem; border-top: 1px solid #dee2e6; }
@media (max-width: 75rem) { .layout { grid-template-columns: 13rem minmax(0, 1fr); } .toc { display: none; } }
@media (max-width: 50rem) { .layout { display: block; } .sidebar { position: static; max-height: none; } }
"""

def build_site(out:Path=None, nbs:Path=None) -> Path:
    "Write the site for the notebooks in `nbs` (default: the project's) into `out` (default: `_site`)"
    cfg = get_config()
    os.chdir(cfg.config_path)  # where `nbdev-docs` runs the notebooks' doc cells
    sys.path.insert(0, str(cfg.config_path))  # document this checkout's library, installed or not
    nbs, out = Path(nbs or cfg.nbs_path).absolute(), Path(out or cfg.config_path/'_site').absolute()
    os.environ['IN_TEST'] = '1'
    processed = [(f, *process_nb(f)) for f in chapter_files(nbs)]
    pages = [(fm.get('output-file') or nbpath2html(f.name).name, fm.get('title', f.stem)) for f, _, fm in processed]
    links = {f.name: page for (f, *_), (page, _) in zip(processed, pages)}
    md = Renderer(links, f'{cfg.doc_host}{cfg.doc_baseurl}/')
    if out.exists():
        if any(out.iterdir()) and not (out/'site.css').exists(): raise SystemExit(f'{out} is neither empty nor a site: not replacing it')
        shutil.rmtree(out)
    (out/'figures').mkdir(parents=True)
    (out/'site.css').write_text(_css + HtmlFormatter(style='friendly').get_style_defs('.highlight'))
    for i, ((f, nb, fm), (page, title)) in enumerate(zip(processed, pages)):
        md.reset(api_names(nb))
        body = '\n'.join(Page(md, out).cell(c) for c in nb.cells)
        desc = fm.get('description', '')
        (out/page).write_text(_page.format(title=html.escape(title), site=html.escape(cfg.title), desc=html.escape(desc),
            desc_html=md.md.renderInline(desc), repo=cfg.git_url, nav=_nav(pages, page), body=body,
            pager=_pager(pages, i), toc=_toc(md.toc)))
    return out

def serve(out:Path, port:int=8000, host:str='127.0.0.1'):
    "An HTTP server for the site in `out` on `host:port` (0: any free port), not started: call `serve_forever()`"
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    return ThreadingHTTPServer((host, port), partial(Handler, directory=str(out)))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, help='output folder (default: _site/ in the project root)')
    p.add_argument('--serve', action='store_true', help='then serve the site for a local preview (Ctrl-C stops it)')
    p.add_argument('--port', type=int, default=8000, help='port of the preview server (default: 8000)')
    args = p.parse_args()
    out = build_site(args.out)
    print(f'site written to {out}: {len(list(out.glob("*.html")))} pages, {len(list((out/"figures").iterdir()))} figures')
    if args.serve:
        httpd = serve(out, args.port)
        print(f'preview at http://127.0.0.1:{httpd.server_port}/ (Ctrl-C stops it; rerun the command after editing a notebook)', flush=True)
        try: httpd.serve_forever()
        except KeyboardInterrupt: pass
        finally: httpd.server_close()
