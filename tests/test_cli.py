"The `xray-fastai` command end to end, in a subprocess as a user would run it, on a tiny data set."
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd, pytest
from conftest import write_image
from xray_fastai.cli import main

ROOT = Path(__file__).resolve().parents[1]
TRAIN_OPTS = ['data', 'task', 'arch', 'size', 'epochs', 'lr', 'bs', 'balance', 'aug', 'split', 'valid-pct', 'seed',
              'schedule', 'threshold', 'sensitivity', 'out', 'overwrite', 'no-fast-precision', 'resume']

def cli(*args, cache=None, check=None):
    "Run `python -m xray_fastai.cli ARGS`; the completed process"
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]), 'MPLBACKEND': 'agg',
           'PYTHONWARNINGS': 'ignore'}
    if cache: env['XRAY_CACHE'] = str(cache)
    res = subprocess.run([sys.executable, '-m', 'xray_fastai.cli', *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=300)
    if check is not None: assert res.returncode == check, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A tiny Kaggle-layout data set, a model trained on it for one epoch at 32 px, and the command's output"
    tmp = tmp_path_factory.mktemp('cli')
    data = tmp/'chest_xray'
    for split in ('train', 'test'):
        for i in range(10): write_image(data/split/'NORMAL'/f'IM-{i:04d}-0001.jpeg', seed=i)
        for i in range(10): write_image(data/split/'PNEUMONIA'/f'person{i}_bacteria_{i}.jpeg', seed=100+i)
    res = cli('train', '--data', data, '--size', 32, '--epochs', 1, '--bs', 8, '--aug', 'none', '--out', tmp/'run',
              cache=tmp/'cache', check=0)
    return dict(tmp=tmp, data=data, out=tmp/'run', res=res)

def test_train_writes_the_report_and_the_model(run):
    out = run['out']
    assert sorted(p.name for p in out.iterdir()) == sorted([
        'config.json', 'model.safetensors', 'metrics.json', 'per_class.csv', 'confusion.png', 'roc.png', 'most_confused.png',
        'training_log.csv', 'summary.md'])
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['arch'] == 'vgg' and cfg['size'] == [32, 32] and cfg['vocab'] == ['NORMAL', 'PNEUMONIA']
    assert 0 <= cfg['threshold'] <= 1 and cfg['training']['epochs'] == 1 and len(cfg['training']['history']) == 1
    metrics = json.loads((out/'metrics.json').read_text())
    assert metrics['argmax']['n'] == 20 and 'threshold' in metrics
    assert len(pd.read_csv(out/'training_log.csv')) == 1
    summary = (out/'summary.md').read_text()
    for s in ('## Data', '## Settings', '## Training', 'torch', '](confusion.png)', '](roc.png)', 'argmax', 'threshold'): assert s in summary
    assert 'Scores on the test split (20 images)' in run['res'].stdout and 'roc_auc' in run['res'].stdout

def test_predict_prints_a_row_per_image_and_writes_csv(run):
    csv = run['tmp']/'pred.csv'
    res = cli('predict', run['out'], run['data']/'test', '--csv', csv, '--cpu', check=0)
    assert '20 image(s) predicted, 0 unreadable' in res.stdout
    assert res.stdout.count('IM-0') == 10 and res.stdout.count('_bacteria_') == 10
    df = pd.read_csv(csv)
    assert len(df) == 20 and df.label.isin(['NORMAL', 'PNEUMONIA']).all() and df.error.isna().all()
    assert ((df.pneumonia_prob >= 0) & (df.pneumonia_prob <= 1)).all()

def test_predict_reports_unreadable_files_and_goes_on(run, capsys):
    bad = run['tmp']/'bad'; bad.mkdir(exist_ok=True)
    (bad/'broken.jpeg').write_bytes(b'not an image')
    good = next((run['data']/'test'/'NORMAL').iterdir())
    res = cli('predict', run['out'], bad, good, check=0)
    assert '1 image(s) predicted, 1 unreadable' in res.stdout and 'broken.jpeg' in res.stderr
    assert main(['predict', str(run['out']), str(bad/'broken.jpeg')]) == 1  # nothing predicted: exit status 1
    assert 'broken.jpeg: not a readable image' in capsys.readouterr().err

def test_help_lists_every_option(capsys):
    res = cli('train', '--help', check=0)
    for o in TRAIN_OPTS: assert f'--{o}' in res.stdout, o
    assert 'Augmentation preset' in res.stdout and '{patient,report}' in res.stdout
    with pytest.raises(SystemExit) as e: main(['predict', '--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for o in ('model_dir', 'paths', '--csv', '--bs', '--cpu', '--allow-pickle'): assert o in out, o
    assert main(['--help']) == 0
    out = capsys.readouterr().out
    assert 'train' in out and 'predict' in out

@pytest.mark.parametrize('args,msg', [
    (['train', '--data', '{tmp}/nowhere'], 'nowhere: no such file or folder'),
    (['predict', '{tmp}', '{tmp}'], 'config.json: no such file'),
])
def test_bad_input_is_one_line_not_a_traceback(tmp_path, args, msg):
    res = cli(*[a.format(tmp=tmp_path) for a in args], cache=tmp_path/'cache', check=1)
    err = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and msg in err[0] and err[0].startswith('xray-fastai ') and 'Traceback' not in res.stderr

@pytest.mark.parametrize('args,msg', [
    (['train', '--data', '{tmp}', '--epochs', '1'], 'not a chest X-ray folder'),
    (['train', '--epochs', '0'], '--epochs must be at least 1'),
    (['train', '--data', '{tmp}', '--valid-pct', '1.5'], '--valid-pct must be between 0 and 1'),
])
def test_bad_options_in_process(tmp_path, capsys, monkeypatch, args, msg):
    monkeypatch.setenv('XRAY_CACHE', str(tmp_path/'cache'))
    (tmp_path/'notes.txt').write_text('no x-rays here')
    assert main([a.format(tmp=tmp_path) for a in args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]

def test_unknown_command_and_bad_option(capsys):
    assert main(['fit']) == 2 and 'unknown command' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: main(['train', '--task', 'pneumonia'])
    assert e.value.code == 2 and '--task: invalid choice' in capsys.readouterr().err
