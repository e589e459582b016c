"`xray-fastai report` end to end on a tiny draw of the built-in phantoms: the folder, strict JSON, a self-contained HTML page, models that `predict` loads, `--resume`, and one-line errors."
import json, os, re, shutil, signal, subprocess, sys
from pathlib import Path
import pytest
from xray_fastai.cli import main
from xray_fastai.phantoms import phantom_data
from xray_fastai.report import STAGES
from xray_fastai.core import ANOMALY

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--n', 10, '--size', 32, '--epochs', 1, '--ae-epochs', 1, '--opacity-epochs', 1, '--anomaly-size', 32, '--bs', 4]

def environ() -> dict:
    "The environment of a command on the built-in phantoms (no XRAY_DATA), this checkout first on the path"
    env = {k: v for k, v in os.environ.items() if k != 'XRAY_DATA'}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]), MPLBACKEND='agg', PYTHONWARNINGS='ignore')
    return env

def cli(*args, check=None):
    "Run `python -m xray_fastai.cli ARGS` on the built-in phantoms (no XRAY_DATA); the completed process"
    res = subprocess.run([sys.executable, '-m', 'xray_fastai.cli', *map(str, args)], capture_output=True, text=True, env=environ(), timeout=1800)  # a guard against a hang, not a time limit
    if check is not None: assert res.returncode == check, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A tiny report: 10 phantoms per class and split, 32 px, one epoch per model"
    out = tmp_path_factory.mktemp('report')/'report'
    return dict(out=out, res=cli('report', '--out', out, *TINY, check=0))

def strict_json(text:str):
    def refuse(c): raise ValueError(f"{c} is not JSON")
    return json.loads(text, parse_constant=refuse)

def test_report_folder(run):
    out, res = run['out'], run['res']
    assert sorted(p.name for p in out.iterdir()) == ['binary', 'figures', 'metrics.json', 'multiclass', 'report.html', 'report.md', 'stages']
    m = strict_json((out/'metrics.json').read_text())
    assert list(m) == ['report', *STAGES]
    assert m['report']['data'] == 'the built-in phantoms' and m['report']['size'] == 32 and m['report']['n'] == 10
    assert m['binary']['epochs'] == 1 and m['binary']['vocab'] == ['NORMAL', 'PNEUMONIA'] and 0 <= m['binary']['test_roc_auc'] <= 1
    assert m['multiclass']['vocab'] == ['NORMAL', 'BACTERIA', 'VIRUS']
    table = m['anomaly']['table']
    assert {r['variant'] for r in table} == {'autoencoder mse', 'autoencoder ssim', *ANOMALY.detectors}
    assert m['anomaly']['picked'] == max(table, key=lambda r: r['valid_auroc'])['variant']  # validation picks, never test
    assert 0 <= m['shift']['domain_auc'] <= 1 and set(m['shift']) >= {'domain_auc_NORMAL', 'domain_auc_PNEUMONIA'}
    assert set(m['embeddings']) == {'binary', 'multiclass', 'seconds', 'figures'}
    assert 0 <= m['explain']['pointing_game']['test_hit'] <= 1
    md = (out/'report.md').read_text()
    for s in ('## Data', '## 1a. NORMAL vs PNEUMONIA', '## 1b.', '## The test shift', '## 2. Embeddings', '## 3. Anomaly', '## 4. Explanations', '(picked)',
              '### Approach', '### Settings', '### Results', '### Discussion', 'xray-fastai report --out'):
        assert s in md, s
    figs = re.findall(r'!\[[^]]*\]\(([^)]+)\)', md)
    assert len(figs) == sum(len(m[s]['figures']) for s in STAGES) >= 12 and all((out/f).is_file() for f in figs)
    for line in ('[1/6] binary', '[6/6] explain: task 4', 'binary epoch 1/1', 'opacity model epoch 1/1', 'Report: '): assert line in res.stdout, line
    assert res.stdout.count('binary epoch') == 1 and 'Better model found' not in res.stdout  # one line per training epoch, no fastai log lines

def test_html_is_self_contained(run):
    page = (run['out']/'report.html').read_text()
    srcs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert len(srcs) == len(re.findall('<img', page)) >= 12 and all(s.startswith('data:image/png;base64,') for s in srcs)
    assert not re.search(r'https?://|url\(|@import', page)

@pytest.mark.parametrize('task', ['binary', 'multiclass'])
def test_predict_loads_the_models(run, task):
    images = phantom_data()/'test'/'PNEUMONIA'
    res = cli('predict', run['out']/task, images, '--cpu', check=0)
    assert f"{len(list(images.glob('*.jpeg')))} image(s) predicted, 0 unreadable" in res.stdout

def test_resume_keeps_finished_stages(run, tmp_path):
    out = tmp_path/'report'
    shutil.copytree(run['out'], out)
    (out/'stages'/'explain.json').unlink(); (out/'report.md').unlink()  # as if stopped during the last stage
    weights = (out/'binary'/'model.safetensors').stat().st_mtime_ns
    res = cli('report', '--out', out, *TINY, check=2)
    assert res.stderr.strip().splitlines() == [f"xray-fastai report: error: {out} holds an interrupted report; pass --resume to continue it, or --overwrite to start afresh"]
    res = cli('report', '--out', out, *TINY[:-2], '--resume', check=2)  # another batch size
    assert 'made with other options' in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli('report', '--out', out, *TINY, '--resume', check=0)
    assert res.stdout.count('finished before, kept') == 5 and '[6/6] explain: task 4' in res.stdout
    assert (out/'binary'/'model.safetensors').stat().st_mtime_ns == weights
    assert strict_json((out/'metrics.json').read_text())['explain']['figures'] == ['figures/gradcam-test.png', 'figures/gradcam-phantoms.png']

def one_line_error(capsys, *args) -> str:
    assert main(['report', *map(str, args)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('xray-fastai report: error: '), err
    return err[0]

def test_bad_options(capsys, tmp_path, run):
    assert '--size must be at least 16' in one_line_error(capsys, '--size', 8, '--out', tmp_path/'a')
    assert '--n must be at least 8' in one_line_error(capsys, '--n', 2, '--out', tmp_path/'a')
    assert 'unknown architecture' in one_line_error(capsys, '--arch', 'vgx', '--out', tmp_path/'a')
    assert '--resume needs the --out folder' in one_line_error(capsys, '--resume')
    (tmp_path/'file').write_text('x')
    assert 'is a file' in one_line_error(capsys, '--out', tmp_path/'file')
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'report.md').write_text('my notes')
    assert 'holds report.md, which the report would replace' in one_line_error(capsys, '--out', tmp_path/'mine')
    assert (tmp_path/'mine'/'report.md').read_text() == 'my notes'
    assert 'holds no interrupted report to resume' in one_line_error(capsys, '--out', tmp_path/'mine', '--resume')
    assert 'already holds a report' in one_line_error(capsys, '--out', run['out'])
    assert 'pass one of them' in one_line_error(capsys, '--out', run['out'], '--resume', '--overwrite')
    with pytest.raises(SystemExit) as e: main(['report', '--size', 'big'])
    assert e.value.code == 2

def test_bad_data_is_one_line_and_writes_nothing(capsys, tmp_path):
    "A missing path, a file that is no CSV, an empty folder, no known layout, one class, no test split: one line each, and no --out"
    jpeg, n = next((phantom_data()/'train'/'NORMAL').glob('*.jpeg')), iter(range(100))
    def folder(*files):
        d = tmp_path/f'data{next(n)}'; d.mkdir()
        for f in files: (d/f).parent.mkdir(parents=True, exist_ok=True); shutil.copyfile(jpeg, d/f)
        return d
    (tmp_path/'notes.txt').write_text('some notes\n')
    one = folder('n1.jpeg', 'n2.jpeg')
    (tmp_path/'one.csv').write_text(f"path,label,split\n{one/'n1.jpeg'},NORMAL,train\n{one/'n2.jpeg'},NORMAL,test\n")
    cases = [(tmp_path/'missing', 'no such file or folder', 'Expected'), (tmp_path/'notes.txt', 'needs columns path,label', 'Expected'),
             (folder(), 'not a chest X-ray folder', 'Expected'), (folder('images/x.jpeg'), 'not a chest X-ray folder', 'Found: images'),
             (folder('train/NORMAL/x.jpeg', 'test/NORMAL/y.jpeg'), 'train: no PNEUMONIA/ folder', 'Expected'),
             (folder('NORMAL/x.jpeg'), 'one class folder only, NORMAL/', "add the other class's folder"),
             (tmp_path/'one.csv', 'no PNEUMONIA images in the training split', 'add them, or give another --data'),
             (folder('NORMAL/x.jpeg', 'PNEUMONIA/person1_virus_1.jpeg'), 'no test split', 'add a test/ folder'),
             (folder('train/NORMAL/a.jpeg', 'train/PNEUMONIA/b.jpeg', 'test/NORMAL/c.jpeg', 'test/PNEUMONIA/d.jpeg'),
              'needs the pneumonia type', 'name the files as Kaggle does')]
    for data, what, todo in cases:
        err = one_line_error(capsys, '--data', data, '--out', tmp_path/'out', *TINY)
        assert what in err and todo in err, err
        assert not (tmp_path/'out').exists(), data  # refused before the report folder is created

def test_resume_with_other_options_names_them(run, tmp_path, capsys):
    out = tmp_path/'report'
    shutil.copytree(run['out'], out); (out/'report.md').unlink()
    changed = [*TINY[:2], '--size', 48, *TINY[4:], '--seed', 1, '--data', phantom_data()]
    err = one_line_error(capsys, '--out', out, *changed, '--resume')
    for diff in ('--size 32 then, 48 now', '--seed 0 then, 1 now', '--data the built-in phantoms then, ', 'the preset (--full) phantoms then, data now',
                 'resume it with the same options, or start afresh with --overwrite or a new --out'):
        assert diff in err, err
    assert '--epochs' not in err and '--bs' not in err  # only the options that differ
    (out/'stages'/'settings.json').write_text('{"size": 3')  # damaged
    assert 'unreadable' in one_line_error(capsys, '--out', out, *TINY, '--resume')

IGNORED = {'command', 'date', 'hardware', 'total_seconds', 'seconds', 'train_s'}  # what two runs of one report may differ in

def comparable(m):
    "metrics.json without its timings, date, command line and hardware"
    if isinstance(m, dict): return {k: comparable(v) for k, v in m.items() if k not in IGNORED}
    return [comparable(v) for v in m] if isinstance(m, list) else m

@pytest.mark.parametrize('sig,stage,line', [(signal.SIGKILL, 2, 'multiclass epoch 1/1'),  # trained, its model being written
                                             (signal.SIGKILL, 4, '[4/6] embeddings'), (signal.SIGINT, 5, '[5/6] anomaly')])
def test_interrupted_report_resumes_to_the_same_metrics(run, tmp_path, sig, stage, line):
    "Killed (SIGKILL) or stopped with Ctrl-C (SIGINT) within a stage, then `--resume`: the metrics of the report never interrupted"
    out = tmp_path/'report'
    proc = subprocess.Popen([sys.executable, '-m', 'xray_fastai.cli', 'report', '--out', str(out), *map(str, TINY)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C's default even when pytest runs in the background, where the shell ignores it
    for printed in proc.stdout:
        if line in printed: break
    else: pytest.fail(f"the report ended before {line}:\n{proc.stderr.read()[-3000:]}")
    proc.send_signal(sig)
    err = proc.communicate(timeout=1800)[1]  # a guard against a hang, not a time limit
    assert proc.returncode != 0 and not (out/'report.md').exists(), err[-3000:]
    if sig == signal.SIGINT:
        assert err.strip().splitlines() == [f"xray-fastai report: interrupted; the finished stages are kept in {out}/stages; to continue: "
                                            f"xray-fastai report --out {out} {' '.join(map(str, TINY))} --resume"], err
    assert [name for name in STAGES if (out/'stages'/f'{name}.json').exists()] == list(STAGES)[:stage-1]  # the stages before it, kept
    res = cli('report', '--out', out, *TINY, '--resume', check=0)
    assert res.stdout.count('finished before, kept') == stage - 1 and f"[{stage}/6] {list(STAGES)[stage-1]}: " in res.stdout
    assert comparable(strict_json((out/'metrics.json').read_text())) == comparable(strict_json((run['out']/'metrics.json').read_text()))

def test_help_lists_report(capsys):
    assert main(['--help']) == 0
    assert 'report ' in capsys.readouterr().out

def test_ensemble_and_adapt(tmp_path):
    "`--ensemble 2`: each classifier folder is an ensemble that `predict` loads; `--adapt`: adapted rows of their own, labelled transductive"
    out = tmp_path/'report'
    res = cli('report', '--out', out, *TINY, '--ensemble', 2, '--adapt', check=0)
    m = strict_json((out/'metrics.json').read_text())
    for task in ('binary', 'multiclass'):
        assert [r['seed'] for r in m[task]['members']] == [0, 1]
        assert json.loads((out/task/'config.json').read_text())['ensemble'] and (out/task/'member1'/'model.safetensors').is_file()
        a = m['shift']['adapted'][task]
        assert a['n_images'] == 30  # every test image (10 of each type), read without labels
        assert 0 <= a['accuracy'] <= 1 if 'refused' not in a else a['refused'].startswith('the model calls')  # scored, or the guard's reason
    assert 'binary member 2/2 epoch 1/1' in res.stdout
    md = (out/'report.md').read_text()
    assert 'Adapted to the test images: transductive' in md
    images = phantom_data()/'test'/'NORMAL'
    assert 'ensemble of 2' in cli('predict', out/'binary', images, '--cpu', check=0).stdout
    assert 'at most 20' in cli('report', '--out', tmp_path/'b', *TINY, '--ensemble', 21, check=2).stderr
