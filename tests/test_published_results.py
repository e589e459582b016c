"""The benchmark results the docs quote ship with the package (`xray_fastai/results`, read by `published_results`), so
the notebooks run from a copy of `nbs/` alone (on a hosted GPU notebook, say): no notebook reads `../bench/results`."""
import json, os, re, shutil, subprocess, sys, zipfile
from pathlib import Path

import pytest

from xray_fastai.experiments import published_results

root = Path(__file__).parents[1]
nbs, bench = root/'nbs', root/'bench'/'results'

def _code_cells(f:Path) -> list:
    return [''.join(c['source']) for c in json.loads(f.read_text())['cells'] if c['cell_type'] == 'code']

def test_published_results_are_the_benchmarks_files():
    "Each shipped file is byte for byte the `bench/results` file of its name (copy it again after a benchmark reruns)"
    shipped = sorted(f for f in published_results().iterdir() if f.is_file())   # `report_data/` is a report, not a benchmark
    assert len(shipped) > 30
    assert [f.name for f in shipped if f.read_bytes() != (bench/f.name).read_bytes()] == []

def test_no_notebook_reads_outside_the_package_and_the_data():
    "Paths out of `nbs/` (`..`, `bench/results`) fail where the notebooks are copied alone"
    outside = re.compile(r'''['"]\.\.['"/]|['"]bench['"]|['"]bench/''')   # `Path('..')/'bench'`, `'../bench/results'`
    reads = {f.name: [m[0] for s in _code_cells(f) for m in outside.finditer(s)] for f in sorted(nbs.glob('*.ipynb'))}
    assert {k: v for k, v in reads.items() if v} == {}

def test_notebooks_name_only_shipped_results():
    "Every result a notebook names literally is shipped"
    names = {m for f in nbs.glob('*.ipynb') for s in _code_cells(f) for m in re.findall(r"published_results\('([^']+)'\)", s)}
    assert names and [n for n in sorted(names) if n != 'nothing.csv' and not (published_results()/n).is_file()] == []
    with pytest.raises(FileNotFoundError, match='not among the published results'): published_results('nothing.csv')

def test_the_wheel_ships_them(tmp_path):
    "pyproject.toml declares them as package data: a wheel built from this checkout holds every one"
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', str(tmp_path), str(root)],
                   check=True, capture_output=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob('*.whl'))).namelist())
    shipped = {f'xray_fastai/{f.relative_to(published_results().parent).as_posix()}' for f in published_results().rglob('*') if f.is_file()}
    assert {'xray_fastai/results/report_data/report.md', 'xray_fastai/results/report_data/metrics.json'} <= shipped <= names

def test_the_sample_report_is_small_and_names_no_machine():
    "The Report chapter's sample (`results/report_data`): report.md, metrics.json and a few figures, under 1 MB, no machine paths or hardware"
    folder = published_results()/'report_data'
    files = [f for f in folder.rglob('*') if f.is_file()]
    if not files: pytest.skip('no sample report published yet')
    assert (folder/'report.md').is_file() and (folder/'metrics.json').is_file() and any(f.suffix == '.png' for f in files)
    assert sum(f.stat().st_size for f in files) < 1e6
    machine = re.compile(r'/work/|/tmp/|/home/|/root/|site-packages|Xeon|Intel|AMD|torch \d|Linux \d')
    for f in ('report.md', 'metrics.json'): assert not machine.search(text := (folder/f).read_text()), (f, machine.search(text))

def test_home_page_runs_from_a_copy_of_nbs(tmp_path):
    "The home page (its results tables read from the package) executes in a folder holding nothing but itself"
    (tmp_path/'nbs').mkdir()
    shutil.copy(nbs/'index.ipynb', tmp_path/'nbs')
    env = {k: v for k, v in os.environ.items() if k != 'XRAY_DATA'} | {'XRAY_CACHE': str(tmp_path/'cache'), 'MPLBACKEND': 'agg'}
    code = ("import os, sys; os.chdir(sys.argv[1]); from execnb.shell import CaptureShell; "
            "sh = CaptureShell(); sh.execute('index.ipynb', 'out.ipynb'); print('ran')")
    res = subprocess.run([sys.executable, '-c', code, str(tmp_path/'nbs')], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and 'ran' in res.stdout, res.stderr[-2000:]
    out = json.loads((tmp_path/'nbs'/'out.ipynb').read_text())
    errors = [o for c in out['cells'] for o in c.get('outputs', []) if o['output_type'] == 'error']
    assert errors == []
    tables = [''.join(o['data']['text/html']) for c in out['cells'] for o in c.get('outputs', []) if 'text/html' in o.get('data', {})]
    assert any('binary' in t and 'H100' in t for t in tables)   # the classifiers' table, from the shipped CSVs
