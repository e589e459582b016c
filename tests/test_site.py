"""The documentation site: Quarto's config stays what `nbdev-docs` expects, and the site built without Quarto
(`python tools/build_site.py`) is opened page by page in headless Chromium."""
import ast, base64, dataclasses, hashlib, html, importlib, inspect, json, os, re, subprocess, sys, threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urldefrag
from urllib.request import urlopen

import pytest, yaml
from nbdev.config import get_config
from conftest import chromium_driver

root = Path(__file__).parents[1]
nbs = root/'nbs'
artefacts = root/'test-artefacts'
sys.path.insert(0, str(root/'tools'))
from build_site import chapter_files

# ---- the config `nbdev-docs` reads

def test_nbdev_yml_is_what_nbdev_docs_writes():
    "`nbdev-docs` rewrites `nbdev.yml` from pyproject.toml: the committed one must already match"
    from nbdev.quarto import _nbdev_yml
    cfg = get_config()
    vals = {k: cfg[k] for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']}
    assert (nbs/'nbdev.yml').read_text() == _nbdev_yml.format(**vals, doc_path=cfg.doc_path.name)

def test_quarto_yml_is_valid():
    q = yaml.safe_load((nbs/'_quarto.yml').read_text())
    assert q['project']['type'] == 'website'
    assert set(q['metadata-files']) == {'nbdev.yml', 'sidebar.yml'}
    assert (nbs/q['format']['html']['css']).exists()
    assert not get_config().custom_sidebar   # so `nbdev-docs` writes sidebar.yml from nbs/ each time

def test_nbdev_docs_executes_only_doc_cells():
    "`nbdev-docs` executes every cell holding an import (to run `show_doc`): such cells must do nothing else"
    from nbdev.process import NBProcessor
    from nbdev.processors import _do_eval
    from build_site import _is_doc_cell
    mixed = [f'{f.name} cell {c.idx_}' for f in sorted(nbs.glob('*.ipynb')) for c in NBProcessor(f).nb.cells
             if c.cell_type == 'code' and _do_eval(c) and not _is_doc_cell(c)]
    assert mixed == [], ("these cells import and compute: move their imports to the notebook's import cell "
                         "(or mark a cheap setup cell `#| exec_doc`)")

def test_chapters_end_with_questions_and_further_research():
    "Every teaching chapter (not the home page, not the reliability reference) ends as fastbook's do"
    missing = []
    for f in sorted(nbs.glob('[0-9][0-9]*_*.ipynb')):
        heads = [l for c in json.loads(f.read_text())['cells'] if c['cell_type'] == 'markdown'
                 for l in ''.join(c['source']).splitlines() if l.startswith('## ')]
        if heads[-2:] != ['## Questions', '## Further research']: missing.append(f.name)
    assert missing == []

def test_sidebar_lists_every_notebook():
    assert sorted(chapter_files(nbs)) == sorted(nbs.glob('*.ipynb'))
    assert chapter_files(nbs)[0].name == 'index.ipynb'

# ---- the static site

@pytest.fixture(scope='session')
def site(tmp_path_factory):
    "The site, built once by the documented command"
    out = tmp_path_factory.mktemp('site')/'_site'
    subprocess.run([sys.executable, 'tools/build_site.py', '--out', str(out)], cwd=root, check=True)
    return out

class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args): pass

@pytest.fixture(scope='session')
def server(site):
    "`site` served over HTTP on localhost"
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), partial(_Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_port}/'
    httpd.shutdown()

@pytest.fixture(scope='session')
def browser():
    with chromium_driver() as driver: yield driver

_read_page = """
const main = document.querySelector('main');
return {title: document.title, h1: (document.querySelector('main h1') || {}).textContent || '',
  text: main ? main.innerText.length : 0,
  imgs: [...document.images].map(i => [i.src, i.complete, i.naturalWidth]),
  // what the figure check of the notebook run said of each figure (a JSON list of flagged axes), null when unchecked
  checks: [...document.querySelectorAll('main img')].map(i => [i.getAttribute('src'), i.getAttribute('data-outlier-axes')]),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  body: main ? main.innerText : '',
  // each figure: its file, its own width, the width it is shown at, and where a click on it leads
  figs: [...document.querySelectorAll('main figure img')].map(i => [i.getAttribute('src'), i.naturalWidth, i.clientWidth,
                                                                  (i.closest('a[href]') || {}).href || null]),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  nav: [...document.querySelectorAll('nav.sidebar a')].map(a => a.href),
  prev: (document.querySelector('a[rel=prev]') || {}).href, next: (document.querySelector('a[rel=next]') || {}).href,
  api: [...document.querySelectorAll('main h3[id]')].map(h => h.id),
  outputs: [...document.querySelectorAll('main .output')].map(e => e.textContent),
  tables: [...document.querySelectorAll('main table')].map(t => {
    // a table is clipped when it is wider than what shows of it and nothing between it and <main> scrolls:
    // a box hiding the overflow, or the table running past <main>'s right edge (under the contents list)
    let hidden = false, scrolls = false;
    for (let e = t; e && e !== main.parentElement; e = e.parentElement) {
      if (e.scrollWidth <= e.clientWidth + 1) continue;
      const o = getComputedStyle(e).overflowX;
      if (o === 'auto' || o === 'scroll') scrolls = true; else if (o === 'hidden' || o === 'clip') hidden = true;
    }
    const past = t.getBoundingClientRect().right - main.getBoundingClientRect().right > 1;
    return {head: (t.rows[0] || {}).textContent || '', clipped: !scrolls && (hidden || past)};
  })};
"""

@pytest.fixture(scope='session')
def pages(site, server, browser):
    "Every page of the site opened in Chromium (after its images loaded): what it shows and what the console said"
    res = {}
    for f in sorted(site.glob('*.html')):
        browser.get(server + f.name)
        res[f.name] = browser.execute_script(_read_page) | {'log': browser.get_log('browser')}
    artefacts.mkdir(exist_ok=True)
    browser.get(server + 'index.html')   # the home page, whole
    browser.set_window_size(1280, min(browser.execute_script('return document.documentElement.scrollHeight'), 4000))
    browser.save_screenshot(str(artefacts/'site-index.png'))
    browser.set_window_size(1280, 1400)
    browser.get(server + 'data.html')    # a chapter: its top (API entries), then its first figure
    browser.save_screenshot(str(artefacts/'site-data.png'))
    browser.execute_script("document.querySelector('main img').scrollIntoView({block: 'center'})")
    browser.save_screenshot(str(artefacts/'site-data-figure.png'))
    print(f'screenshots in {artefacts}')
    return res

# what no output on the site may show (defined here, apart from tools/clean_outputs.py, which it checks)
_unclean = {'progress bar': re.compile(r'\|[█-]{10,}\||\d+\.\d\d% \[\d+/\d+ \d\d:\d\d'),
            'warning': re.compile(r'\w*Warning: |warnings\.warn\('),
            'machine path': re.compile(r'(/work/|/home/|/Users/|/root/|site-packages|dist-packages)[^\s]*'),
            'carriage return': re.compile(r'\r'),
            'fastai log line': re.compile(r'Better model found at epoch')}
# words about how the project is run, not about the course
_internal = re.compile(r"\b(the issue|issue \d+|issue's|lease|aimed at|has not run on a GPU yet)\b", re.I)

def internal_words(p:dict) -> list:
    "Words on page `p` that speak of how the project is run rather than of the course"
    return sorted({m.group(0) for m in _internal.finditer(p['body'])})

def small_unlinked_figures(p:dict) -> list:
    "Figures of page `p` shown below half their own width with no link to the full-size picture"
    return [src for src, natural, shown, link in p['figs'] if natural and shown < natural / 2 and not (link or '').endswith(src)]

def output_problems(p:dict) -> list:
    "What page `p`'s outputs show that a reader should not see: progress bars (a staircase of updates or one), warnings, machine paths"
    return [f'{kind}: {m[0][:60]!r}' for text in p['outputs'] for kind, pat in _unclean.items() for m in [pat.search(text)] if m]

def clipped_tables(p:dict) -> list:
    "Tables of page `p` wider than what shows of them, with no way to scroll to the rest"
    return [t['head'][:80] for t in p['tables'] if t['clipped']]

def outlier_figures(p:dict, unchecked_ok:set=frozenset()) -> list:
    "Figures of page `p` whose axes the notebook run found stretched by outliers, or that carry no check (but those in `unchecked_ok`)"
    res = []
    for src, check in p['checks']:
        if check is None:
            if Path(src).name not in unchecked_ok: res.append(f'{src}: not checked (drawn before `core.outlier_axes` recorded its check)')
        elif (flags := json.loads(check)): res.append(f"{src}: {'; '.join(flags)}")
    return res

_bad_page = """<!doctype html><html><head><title>bad</title><link rel="icon" href="data:,"><style>.clip { overflow: hidden; width: 300px; } main { width: 800px; } img { max-width: 100%; }</style></head>
<body><main><h1>bad</h1>
<pre class="output stdout">Epoch 1/1 : |████████████--------------------| 40.00% [2/5 00:01&lt;00:02]
Epoch 1/1 : |████████████████████████████████| 100.00% [5/5 00:03&lt;00:00]</pre>
<pre class="output stderr">/work/venv/lib/python3.11/site-packages/torch/x.py:1: FutureWarning: deprecated
  warnings.warn(</pre>
<div class="clip"><table><tr><th>a_very_long_column_name</th><th>another_very_long_column_name</th><th>valid_roc_auc</th></tr></table></div>
<div style="width: 300px; overflow-x: auto"><table><tr><th>a_very_long_column_name</th><th>another_very_long_column_name</th></tr></table></div>
<figure><img src="stretched.png" alt="figure" data-outlier-axes="[&quot;axes 0: 98% of the data fill 3.0% of the x axis&quot;]"></figure>
<figure><img src="unchecked.png" alt="figure"></figure><figure><img src="fine.png" alt="figure" data-outlier-axes="[]"></figure>
<pre class="output stdout">Better model found at epoch 3 with valid_loss value: 0.31.</pre>
<p>Within the issue's 4 GiB budget.</p>
<figure><img src="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='3000' height='40'/%3E" alt="wide" data-outlier-axes="[]"></figure>
</main></body></html>"""

def test_page_checks_catch_a_bad_page(site, server, browser):
    """The checks below fail on a page with a progress staircase, a warning with a machine path, a clipped table, a figure
    stretched by an outlier and one that was not checked"""
    bad = site/'canary'/'bad.html'
    bad.parent.mkdir(exist_ok=True)
    bad.write_text(_bad_page)
    browser.get(server + 'canary/bad.html')
    p = browser.execute_script(_read_page)
    browser.get_log('browser')   # drained: the other pages' console logs start empty
    kinds = {pr.split(':')[0] for pr in output_problems(p)}
    assert kinds == {'progress bar', 'warning', 'machine path', 'fastai log line'}, output_problems(p)
    assert internal_words(p) == ['the issue']
    assert [s[:26] for s in small_unlinked_figures(p)] == ['data:image/svg+xml,%3Csvg ']   # 3000 px wide, shown at the column's width
    assert clipped_tables(p) == ['a_very_long_column_nameanother_very_long_column_namevalid_roc_auc']  # the scrolling one passes
    assert outlier_figures(p) == ['stretched.png: axes 0: 98% of the data fill 3.0% of the x axis',
        'unchecked.png: not checked (drawn before `core.outlier_axes` recorded its check)']   # the checked, unflagged one passes
    assert outlier_figures(p, {'unchecked.png'}) == outlier_figures(p)[:1]

def test_outputs_are_clean(pages):
    "No page shows progress-bar updates, library warnings or paths of the machine the notebooks ran on"
    problems = {name: pr for name, p in pages.items() if (pr := output_problems(p))}
    assert problems == {}, 'run `python tools/clean_outputs.py` on the notebooks (and see DEVELOPING.md)'

def test_pages_speak_of_the_course(pages):
    "No page speaks of how the project is run (issues, leases, targets) instead of the course"
    assert {name: w for name, p in pages.items() if (w := internal_words(p))} == {}

def test_wide_figures_link_to_their_full_size(pages):
    "A figure shown below half its own width (a wide strip in the text column) opens at full size when clicked"
    assert {name: f for name, p in pages.items() if (f := small_unlinked_figures(p))} == {}

def test_tables_fit_or_scroll(pages):
    "Wide tables scroll sideways instead of being cut off"
    assert {name: c for name, p in pages.items() if (c := clipped_tables(p))} == {}

_unchecked = root/'tests'/'figures_before_the_outlier_check.txt'

def test_figures_are_not_stretched_by_outliers(pages):
    """No figure has an axis stretched by outliers (`core.outlier_axes`, recorded when its notebook ran), and every figure
    carries that check, but the figures stored before it existed (listed in `tests/figures_before_the_outlier_check.txt`;
    the list only shrinks: re-executing their notebook checks them, and an entry no longer on the site fails)"""
    listed = {l.split()[0] for l in _unchecked.read_text().splitlines() if l.strip() and not l.startswith('#')}
    problems = {name: pr for name, p in pages.items() if (pr := outlier_figures(p, listed))}
    assert problems == {}, 're-execute the notebook (DEVELOPING.md); a flagged figure needs robust limits, a log axis or clipping with a note'
    unchecked = {Path(src).name for p in pages.values() for src, check in p['checks'] if check is None}
    assert listed - unchecked == set(), f'checked now or gone: remove from {_unchecked.name}'

def test_preview_server_serves_the_site(site):
    "`python tools/build_site.py --serve` previews the site over HTTP: the pages and their figures"
    from build_site import serve
    httpd = serve(site, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f'http://127.0.0.1:{httpd.server_port}/'
        assert urlopen(url + 'index.html').read() == (site/'index.html').read_bytes()
        fig = next((site/'figures').iterdir())
        assert urlopen(url + 'figures/' + fig.name).read() == fig.read_bytes()
        with pytest.raises(HTTPError): urlopen(url + 'nowhere.html')
    finally: httpd.shutdown(); httpd.server_close()
    help_text = subprocess.run([sys.executable, 'tools/build_site.py', '--help'], cwd=root, capture_output=True, text=True).stdout
    assert '--serve' in help_text and '--port' in help_text

def test_every_page_renders(pages):
    assert len(pages) == len(list(nbs.glob('*.ipynb')))
    for name, p in pages.items():
        assert p['h1'] and p['h1'] in p['title'], name
        assert p['text'] > 300, name
        assert [e for e in p['log'] if e['level'] == 'SEVERE'] == [], name

def test_navigation_reaches_every_chapter(pages, server):
    for name, p in pages.items():
        assert sorted(p['nav']) == sorted(server + n for n in pages), name
    order = pages['index.html']['nav']
    assert order[:3] == [server + 'index.html', server + 'images.html', server + 'items.html']  # the course's order
    mapped = [server + h for h in re.findall(r'\((\w+\.html)\)', _course_map())]
    core = list(dict.fromkeys(u for u in mapped if u in order))
    assert len(core) > 15 and core == sorted(core, key=order.index), 'the course map and the sidebar disagree on the order'
    for i, url in enumerate(order):   # previous/next links walk the chapters in the sidebar's order
        p = pages[url[len(server):]]
        assert (p['prev'], p['next']) == (order[i-1] if i else None, order[i+1] if i+1 < len(order) else None)

def _course_map() -> str:
    "The home page's course map: the core chapters' column, row by row"
    md = '\n'.join(''.join(c['source']) for c in json.loads((nbs/'index.ipynb').read_text())['cells'] if c['cell_type'] == 'markdown')
    rows = [l.split('|') for l in md[md.index('## The course map'):].splitlines() if l.startswith('| ') and '.html' in l]
    return ' '.join(r[2] for r in rows)

def _stored_figures() -> list:
    "Digests of every figure stored in the notebooks' outputs (hidden cells left out)"
    res = []
    for f in nbs.glob('*.ipynb'):
        for c in json.loads(f.read_text())['cells']:
            src = ''.join(c['source'])
            if re.search(r'^#\|\s*(hide\s*$|include:\s*false|output:\s*false)', src, re.M): continue
            for o in c.get('outputs', []):
                d = {k: ''.join(v) for k, v in o.get('data', {}).items()}
                raw = next((base64.b64decode(d[m]) for m in ('image/png', 'image/jpeg') if m in d), None)
                if raw is None and 'image/svg+xml' in d: raw = d['image/svg+xml'].encode()
                if raw is not None: res.append(hashlib.sha256(raw).hexdigest())
    return res

def test_figures_load_and_come_from_the_notebooks(pages):
    "Every figure loads, is one of the figures stored in a notebook's outputs (once for each), and none repeats on a page"
    shown, repeated = [], []
    for name, p in pages.items():
        for src, complete, width in p['imgs']:
            assert complete and width > 0, f'{name}: {src} did not load'
            shown.append(hashlib.sha256(urlopen(src).read()).hexdigest())
        srcs = [src for src, *_ in p['imgs']]
        repeated += sorted({f'{name}: {src} x{srcs.count(src)}' for src in srcs if srcs.count(src) > 1})
    assert sorted(shown) == sorted(_stored_figures())
    assert repeated == [], 'the same figure shown several times on a page (stray empty figures?)'

def test_api_entries(pages):
    "Every exported function and class has its `show_doc` entry on its chapter's page, where nbdev's links point"
    from xray_fastai._modidx import d
    missing = []
    for mod, syms in d['syms'].items():
        for sym, (url, _) in syms.items():
            name = sym[len(mod)+1:]
            if '.' in name or name.startswith('_'): continue   # methods go with their class; private names have none
            page, frag = url.split('#')
            if frag not in pages[page]['api']: missing.append(f'{page}#{frag}')
    assert missing == []
    for sym, page in [('xray_dataloaders', 'data.html'), ('classifier_learner', 'learner.html'), ('gradcam', 'explain.html')]:
        assert sym in pages[page]['api']

def test_internal_links_resolve(pages, server):
    broken = []
    for name, p in pages.items():
        for link in p['links']:
            url, frag = urldefrag(link)
            if not url.startswith(server): continue
            target = url[len(server):] or 'index.html'
            if target in pages: ok = not frag or frag in pages[target]['ids']
            else:
                try: ok = urlopen(url).status == 200
                except HTTPError: ok = False
            if not ok: broken.append(f'{name} -> {link[len(server):]}')
    assert broken == []

# ---- API blocks: the toolkit's own parameters, not fastai's signatures

_api_block = re.compile(r'<div class="api">.*?<h3 id="([^"]+)">.*?</h3>\s*<pre class="highlight"><code>(.*?)</code></pre>', re.S)
_max_inherited = 5   # a small constructor inherited from fastai (`Transform`: 4) may show; a signature passed on to (`Learner`: 13) may not

def api_signatures(page:str) -> dict:
    "Heading id -> the signature (as text) of each API block of the HTML `page`"
    return {hid: html.unescape(re.sub(r'<[^>]+>', '', code)) for hid, code in _api_block.findall(page)}

def listed_params(sig:str) -> list:
    "The parameter names of the signature `sig` shows (`def f(\\n    a:int=0, # comment\\n ...)->T: # comment`)"
    sig = re.sub(r'<[^>\n]*>', 'None', sig.split('"""')[0])   # reprs such as `<factory>` are no Python
    a = ast.parse(sig.rstrip() + '\n    pass').body[0].args
    return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if p]

def own_params(obj) -> set:
    "Parameters the toolkit declares for `obj`: in its code and in the toolkit's functions or settings it delegates to"
    own = set()
    while obj is not None and getattr(obj, '__module__', '').startswith('xray_fastai'):
        if dataclasses.is_dataclass(obj): own |= {f.name for f in dataclasses.fields(obj)}
        if isinstance(obj, type): obj = obj.__init__; continue   # an `__init__` inherited from fastai is fastai's
        if (code := getattr(inspect.unwrap(obj), '__code__', None)):   # a decorated function's own code (`torch.no_grad`, ...)
            own |= set(code.co_varnames[:code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 4) + bool(code.co_flags & 8)])
        obj = getattr(obj, '__delwrap__', None)   # `@delegates` (and `runs.settings_options`) leave the target here
    return own

def inherited_params(sig:str, obj) -> list:
    "Parameters the signature `sig` of `obj` lists that the toolkit does not declare (fastai's, through `@delegates` or inheritance)"
    return [p for p in listed_params(sig) if p not in own_params(obj)]

def test_inherited_params_check_catches_a_delegated_learner():
    "The check below fails on a function that `@delegates` to fastai's `Learner`, and passes once it documents `**kwargs`"
    from fastai.learner import Learner
    from fastcore.docments import DocmentText
    from fastcore.meta import delegates
    def f(dls, n:int=1, **kwargs): pass
    def g(dls, n:int=1, **kwargs): pass
    g = delegates(Learner.__init__)(g)
    g.__module__ = f.__module__ = 'xray_fastai.canary'   # as if the toolkit declared them
    assert len(inherited_params(str(DocmentText(g)), g)) > _max_inherited   # `lr`, `cbs`, `metrics`, `wd`, ...
    assert inherited_params(str(DocmentText(f)), f) == []

def test_api_blocks_list_the_toolkits_own_parameters(site):
    """No API block lists more than a few parameters that the toolkit does not declare: a function passing keywords on to
    fastai (`Learner`, `TfmdDL`) documents them as `**kwargs` instead of repeating fastai's whole signature"""
    from xray_fastai._modidx import d
    pages, checked, problems = {}, 0, {}
    for mod, syms in d['syms'].items():
        for sym, (url, _) in syms.items():
            name = sym[len(mod)+1:]
            if '.' in name or name.startswith('_'): continue
            page, frag = url.split('#')
            if page not in pages: pages[page] = api_signatures((site/page).read_text())
            if frag not in pages[page]: continue   # `test_api_entries` checks that every symbol has its block
            checked += 1
            if len(extra := inherited_params(pages[page][frag], getattr(importlib.import_module(mod), name))) > _max_inherited:
                problems[url] = extra
    assert checked > 250   # the blocks were found
    assert problems == {}, "drop `@delegates` to fastai and document `**kwargs` as passed to it (DEVELOPING.md)"
