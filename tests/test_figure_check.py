"""The figure check (`core.outlier_axes`) through the paths a figure takes to the site: a notebook run records it with
each figure (execnb's `CaptureShell`, which `exec_nb` and `nbdev-test` run notebooks in), `nbdev-clean` keeps it,
`tools/build_site.py` writes it on the figure's `<img>` (where `tests/test_site.py` checks it in a browser), and under
`nbdev-test` a cell that shows a figure stretched by outliers fails, with the reason in one line."""
import json, os, subprocess, sys
from pathlib import Path

from fastcore.nbio import dict2nb
from nbdev.clean import clean_nb
from nbdev.config import get_config

root = Path(__file__).parents[1]
sys.path.insert(0, str(root/'tools'))
from build_site import Page

_setup = 'from xray_fastai.core import check_figures; check_figures()\nimport numpy as np, matplotlib.pyplot as plt'   # as every chapter's hidden first cell
_stretched = 'plt.hist(np.r_[np.linspace(0, 1, 999), 3e5]);'   # one score far out: every other one in the first bin
_fine = 'plt.hist(np.random.default_rng(0).normal(size=1000), 30);'

def _write_nb(path:Path, *sources) -> Path:
    cells = [dict(cell_type='code', execution_count=None, id=f'c{i}', metadata={}, outputs=[], source=s) for i, s in enumerate(sources)]
    path.write_text(json.dumps(dict(cells=cells, metadata={}, nbformat=4, nbformat_minor=5)))
    return path

def _figures(nb) -> list:
    "(cell index, output) of every figure stored in notebook `nb`"
    return [(i, o) for i, c in enumerate(nb['cells']) for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]

def test_exec_nb_stores_the_check_and_the_site_shows_it(tmp_path):
    "`exec_nb` (how stored outputs are made) records the check with each figure; nothing fails outside nbdev-test"
    nb_path = _write_nb(tmp_path/'figs.ipynb', _setup, _stretched, _fine)
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'} | {'PYTHONPATH': str(root)}
    subprocess.run([str(Path(sys.executable).parent/'exec_nb'), nb_path.name, '--dest', nb_path.name], cwd=tmp_path, env=env, check=True)
    nb = json.loads(nb_path.read_text())
    assert [o for c in nb['cells'] for o in c['outputs'] if o['output_type'] == 'error'] == []
    clean_nb(nb, allowed_out_metadata_keys=get_config().allowed_out_metadata_keys)   # what `nbdev-clean` keeps of it
    (i1, stretched), (i2, fine) = _figures(nb)
    assert (i1, i2) == (1, 2)
    assert stretched['metadata'] == {'xray_outlier_axes': ['axes 0: 98% of the data fill 9.1% of the x axis']}
    assert fine['metadata'] == {'xray_outlier_axes': []}
    (tmp_path/'site'/'figures').mkdir(parents=True)
    page = Page(md=None, out=tmp_path/'site')
    onb = dict2nb(nb)
    assert 'data-outlier-axes="[&quot;axes 0: 98% of the data fill 9.1% of the x axis&quot;]"' in page.output(onb.cells[1].outputs[0], {})
    assert 'data-outlier-axes="[]"' in page.output(onb.cells[2].outputs[0], {})
    onb.cells[1].outputs[0].metadata = {}   # a figure stored before the check: no attribute, which the site test flags
    assert 'data-outlier-axes' not in page.output(onb.cells[1].outputs[0], {})

def test_nbdev_test_fails_a_cell_that_shows_a_stretched_figure(tmp_path):
    "nbdev-test runs several notebooks in one process (as here): each one's figures are checked, and nothing carries over"
    fine, stretched = _write_nb(tmp_path/'fine.ipynb', _setup, _fine), _write_nb(tmp_path/'stretched.ipynb', _setup, _stretched, _fine)
    kept = _write_nb(tmp_path/'kept.ipynb', _setup, f'fig, ax = plt.subplots(); ax.{_stretched[4:-1]}\nplt.close(fig)', _fine)  # not shown: fine
    code = ("from nbdev.test import test_nb\n"
            f"print([test_nb(f, profile=False)[0] for f in {[str(f) for f in (fine, stretched, fine, kept)]}])")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k != 'IN_TEST'} | {'PYTHONPATH': str(root)})
    assert res.stdout.split('\n')[-2] == '[True, False, True, True]', res.stderr[-3000:]
    assert "ValueError: a figure's axis is stretched by outliers (axes 0: 98% of the data fill 9.1% of the x axis): " in res.stderr
    assert 'While Executing Cell #2:' in res.stderr and res.stderr.count('stretched by outliers') == 1

def test_the_anomaly_histogram_that_started_it_is_flagged_and_its_fix_is_not():
    "The published test scores of the opacity embedding density (seed 0): a plain histogram drew them over 0 to 316,888"
    import matplotlib.pyplot as plt, pandas as pd
    from xray_fastai.core import outlier_axes
    from xray_fastai.experiments import published_results
    from xray_fastai.anomaly import plot_score_hist
    s = pd.read_csv(published_results('anomaly_cpu_scores_seed0.csv'))
    test = s[s['set'] == 'test']
    scores = test['opacity embedding density'].to_numpy()
    fig, ax = plt.subplots()
    counts = ax.hist(scores, 30)[0]
    assert (len(scores), round(scores.max()), counts[0]) == (624, 316888, 611)   # all but 13 in the first bar
    assert outlier_axes(fig) == ['axes 0: 98% of the data fill 12.1% of the x axis']
    assert outlier_axes(plot_score_hist({'opacity embedding density': scores}, test)) == []   # the chapter's figure
    fig, ax = plt.subplots()
    ax.hist(test['opacity body density'], 30)   # skewed, but its bars show the scores
    assert outlier_axes(fig, min_fill=1)[0] == 'axes 0: 98% of the data fill 24.2% of the x axis'
    plt.close('all')
