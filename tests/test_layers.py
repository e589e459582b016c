"The package's layers (DEVELOPING.md, 'The package on one screen'): a module imports only modules on its own layer or below, anywhere in its code; none imports `cli`; importing `core` changes nothing."
import ast, subprocess, sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]/'xray_fastai'
LAYERS = [  # bottom up, as DEVELOPING.md draws them
    ['core', 'models', 'precision'], ['phantoms', 'runs'], ['images'], ['items', 'augment'], ['data'], ['learner', 'evaluate'],
    ['explain', 'embeddings', 'export'], ['predict'], ['adapt', 'anomaly', 'neurons', 'pretrain'], ['shift', 'opacity', 'experiments'], ['report_doc'],
    ['report', 'distributed', 'demo'], ['cli']]
LEVEL = {m: i for i, layer in enumerate(LAYERS) for m in layer}

def imported(path:Path) -> set:
    "The package's modules that `path` imports, at its top or inside functions"
    res = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom) and n.module:
            mod = n.module if n.level == 0 else f'xray_fastai.{n.module}'
            if mod.startswith('xray_fastai.'): res.add(mod.split('.')[1])
            elif mod == 'xray_fastai' or (n.level and not n.module): res |= {a.name for a in n.names if a.name in LEVEL}
        elif isinstance(n, ast.Import):
            res |= {a.name.split('.')[1] for a in n.names if a.name.startswith('xray_fastai.')}
    return res

def test_every_module_has_a_layer():
    mods = {p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_')}
    assert mods == set(LEVEL), (mods - set(LEVEL), set(LEVEL) - mods)

def test_no_module_imports_one_above_it():
    upward = {(m, i) for m in LEVEL for i in imported(PKG/f'{m}.py') if i in LEVEL and LEVEL[i] > LEVEL[m]}
    assert upward == set()

def test_importing_core_changes_nothing():
    "No side effect: matplotlib's `Figure` keeps its own display method until `check_figures()` is called"
    code = ("import matplotlib; matplotlib.use('agg'); from matplotlib.figure import Figure; before = Figure.__dict__.get('_repr_mimebundle_')\n"
            "import xray_fastai.core as c; assert Figure.__dict__.get('_repr_mimebundle_') is before\n"
            "c.check_figures(); assert Figure._repr_mimebundle_ is c._figure_metadata; print('ok')")
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.strip() == 'ok'
