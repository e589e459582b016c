"The `xray-fastai` command end to end, in a subprocess as a user would run it, on a tiny data set."
import errno, json, os, shutil, subprocess, sys
from pathlib import Path
import pandas as pd, pytest
from conftest import write_image
from xray_fastai.cli import main

ROOT = Path(__file__).resolve().parents[1]
TRAIN_OPTS = ['data', 'task', 'arch', 'size', 'epochs', 'lr', 'bs', 'balance', 'aug', 'split', 'valid-pct', 'seed',
              'schedule', 'threshold', 'sensitivity', 'no-fast-precision', 'out', 'overwrite', 'resume', 'ensemble']

def cli(*args, cache=None, check=None):
    "Run `python -m xray_fastai.cli ARGS`; the completed process"
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]), 'MPLBACKEND': 'agg',
           'PYTHONWARNINGS': 'ignore'}
    if cache: env['XRAY_CACHE'] = str(cache)
    res = subprocess.run([sys.executable, '-m', 'xray_fastai.cli', *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=900)  # a safety net; shared CI machines can be slow
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
        'training_log.csv', 'summary.md', 'neighbours.json', 'neighbours.safetensors', 'examples'])  # the last three for `demo`
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['arch'] == 'vgg' and cfg['size'] == [32, 32] and cfg['vocab'] == ['NORMAL', 'PNEUMONIA']
    assert 0 <= cfg['threshold'] <= 1 and cfg['training']['epochs'] == 1 and len(cfg['training']['history']) == 1
    metrics = json.loads((out/'metrics.json').read_text())
    assert metrics['argmax']['n'] == 20 and 'threshold' in metrics
    assert len(pd.read_csv(out/'training_log.csv')) == 1
    summary = (out/'summary.md').read_text()
    for s in ('## Data', '## Settings', '## Training', 'torch', '](confusion.png)', '](roc.png)', 'argmax', 'threshold'): assert s in summary
    assert 'Scores on the test split (20 images)' in run['res'].stdout and 'roc_auc' in run['res'].stdout
    assert cfg['training']['best'] == max(h['roc_auc_score'] for h in cfg['training']['history'])  # not -Infinity
    umask = os.umask(0); os.umask(umask)
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {p.name: (0o777 if p.is_dir() else 0o666) & ~umask for p in out.iterdir()}  # folders as mkdir makes them

def test_the_cli_and_the_python_one_liner_run_the_same_experiment(run):
    "`xray-fastai train` and `train_classifier` share one default run, and with the same options train the same model"
    import dataclasses, inspect, torch
    from safetensors.torch import load_file
    from xray_fastai.core import DEFAULTS, TrainSettings
    from xray_fastai.cli import train
    from xray_fastai.experiments import train_classifier
    from xray_fastai.export import model_state
    for f in (train, train_classifier):
        sig = inspect.signature(f).parameters
        assert {s.name: sig[s.name].default for s in dataclasses.fields(TrainSettings)} == vars(DEFAULTS), f.__name__
    learn, rec = train_classifier(run['data'], size=32, epochs=1, bs=8, aug='none')  # the options the fixture gave the CLI
    cfg = json.loads((run['out']/'config.json').read_text())
    names = ['task', 'arch', 'size', 'epochs', 'lr', 'bs', 'balance', 'aug', 'split', 'valid_pct', 'seed', 'schedule', 'threshold_method']
    assert {k: cfg['training'][k] for k in names} == {k: rec[k] for k in names}
    assert cfg['training']['mixed_precision'] == rec['fast_precision'] == DEFAULTS.fast_precision
    saved, trained = load_file(run['out']/'model.safetensors'), model_state(learn.model)
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)  # the same weights
    metrics = json.loads((run['out']/'metrics.json').read_text())
    assert (cfg['threshold'], metrics['argmax']['accuracy']) == (rec['threshold'], rec['test_accuracy'])

def test_output_to_a_pipe_has_no_progress_bars(run):
    "stdout is a pipe here: fastai's table, one plain line per epoch, and none of the progress bars' `\\r` redraws"
    out = run['res'].stdout
    assert '\r' not in out and '█' not in out and len(out) < 3000, out[:3000]
    header = next(l for l in out.splitlines() if l.startswith('epoch'))
    assert 'train_loss' in header and 'valid_loss' in header
    assert any(l.split()[:1] == ['0'] for l in out.splitlines())  # the epoch's line of the table

def test_help_and_version_print_no_warning():
    "No library warning on stderr with Python's default warning filters, what a user sees (fastai's torch.jit.script one included)"
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])
    for args in (['--help'], ['--version'], ['train', '--help'], ['predict', '--help']):
        res = subprocess.run([sys.executable, '-m', 'xray_fastai.cli', *args], capture_output=True, text=True, env=env, timeout=900)
        assert res.returncode == 0 and res.stderr == '', (args, res.stderr)
    assert '--version' in cli('--help', check=0).stdout

def test_help_and_option_errors_do_not_load_the_library():
    "`--help`, `--version` and a bad option answer before torch and fastai load (importing them takes seconds)"
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    code = ("import sys, contextlib, io\nfrom xray_fastai.cli import main\n"
            "for a in (['--help'], ['--version'], ['train', '--help'], ['report', '--help'], ['predict', '--help'], ['train', '--task', 'nope']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "        try: main(a)\n"
            "        except SystemExit: pass\n"
            "print(*[m for m in ('torch', 'fastai', 'sklearn', 'matplotlib') if m in sys.modules])")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0 and res.stdout.strip() == '', (res.stdout, res.stderr)

def test_predict_prints_a_row_per_image_and_writes_csv(run):
    csv = run['tmp']/'pred.csv'
    res = cli('predict', run['out'], run['data']/'test', '--csv', csv, '--cpu', check=0)
    assert '20 image(s) predicted, 0 unreadable' in res.stdout
    assert res.stdout.count('IM-0') == 10 and res.stdout.count('_bacteria_') == 10
    df = pd.read_csv(csv)
    assert len(df) == 20 and df.label.isin(['NORMAL', 'PNEUMONIA']).all() and df.error.isna().all()
    assert ((df.prob_PNEUMONIA >= 0) & (df.prob_PNEUMONIA <= 1)).all() and "pneumonia_prob" not in df

def test_predict_reports_unreadable_files_and_goes_on(run, capsys):
    bad = run['tmp']/'bad'; bad.mkdir(exist_ok=True)
    (bad/'broken.jpeg').write_bytes(b'not an image')
    good = next((run['data']/'test'/'NORMAL').iterdir())
    res = cli('predict', run['out'], bad, good, check=1)  # a file failed: exit status 1, so that scripts notice
    assert '1 image(s) predicted, 1 unreadable' in res.stdout and 'broken.jpeg' in res.stderr
    assert 'rounded to 3 decimals here; --csv FILE keeps them in full' in res.stdout  # no --csv: where the full numbers are
    assert main(['predict', str(run['out']), str(bad/'broken.jpeg')]) == 1  # nothing predicted: exit status 1
    assert 'broken.jpeg: not a readable image' in capsys.readouterr().err

def test_help_lists_every_option(capsys):
    res = cli('train', '--help', check=0)
    for o in TRAIN_OPTS: assert f'--{o}' in res.stdout, o
    assert 'Augmentation preset' in res.stdout and '{patient,report}' in res.stdout
    assert '(default: True)' not in res.stdout and '(default: False)' not in res.stdout  # a flag's help says what it does
    with pytest.raises(SystemExit) as e: main(['predict', '--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for o in ('model_dir', 'paths', '--csv', '--bs', '--cpu', '--allow-pickle'): assert o in out, o
    assert main(['--help']) == 0
    out = capsys.readouterr().out
    assert 'train' in out and 'predict' in out

def test_the_options_defaults_are_the_settings_objects():
    "Each setting is declared once: `train`'s options are `TrainSettings`' fields with `DEFAULTS`' values, `report`'s its presets'"
    from dataclasses import fields
    from xray_fastai.cli import _parser, train
    from xray_fastai.core import TrainSettings, DEFAULTS, CHOICES
    from xray_fastai.report import report, PRESETS, PRESET_OPTIONS
    p = _parser(train, 'train')
    parsed = vars(p.parse_args([]))
    for f in fields(TrainSettings): assert parsed[f.name] == getattr(DEFAULTS, f.name), f.name
    for name, values in CHOICES.items():
        assert next(a for a in p._actions if a.dest == name).choices == list(values), name
    assert vars(p.parse_args(['--no-fast-precision']))['fast_precision'] is False
    r = _parser(report, 'report')
    parsed, helps = vars(r.parse_args([])), {a.dest: a.help for a in r._actions}
    assert (parsed['arch'], parsed['seed']) == (DEFAULTS.arch, DEFAULTS.seed)
    for opt, (group, field) in PRESET_OPTIONS.items():
        assert parsed[opt] is None   # the preset's value, shown in the help
        assert helps[opt].endswith(', '.join(f"{'' if k == 'phantoms' else '--'}{k} {getattr(getattr(s, group), field)}" for k, s in PRESETS.items()) + ')'), opt

@pytest.mark.parametrize('args,msg', [
    (['train', '--data', '{tmp}/nowhere'], 'nowhere: no such file or folder'),
    (['predict', '{tmp}', '{tmp}'], 'config.json: no such file'),
])
def test_bad_input_is_one_line_not_a_traceback(tmp_path, args, msg):
    res = cli(*[a.format(tmp=tmp_path) for a in args], cache=tmp_path/'cache', check=2)
    err = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and msg in err[0] and err[0].startswith('xray-fastai ') and 'Traceback' not in res.stderr

@pytest.mark.parametrize('args,msg', [
    (['train', '--data', '{tmp}', '--epochs', '1'], 'not a chest X-ray folder'),
    (['train', '--epochs', '0'], '--epochs must be at least 1'),
    (['train', '--data', '{tmp}', '--valid-pct', '1.5'], '--valid-pct must be between 0 and 1'),
    (['train', '--ensemble', '0'], '--ensemble must be between 1 and 20 models, not 0'),
    (['train', '--ensemble', '-2'], '--ensemble must be between 1 and 20 models, not -2'),
    (['train', '--ensemble', '1000'], '--ensemble must be between 1 and 20 models, not 1000'),
])
def test_bad_options_in_process(tmp_path, capsys, monkeypatch, args, msg):
    monkeypatch.setenv('XRAY_CACHE', str(tmp_path/'cache'))
    (tmp_path/'notes.txt').write_text('no x-rays here')
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]

def test_unknown_command_and_bad_option(capsys):
    assert main(['fit']) == 2 and 'unknown command' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: main(['train', '--task', 'pneumonia'])
    assert e.value.code == 2 and '--task: invalid choice' in capsys.readouterr().err

@pytest.fixture(scope='module')
def bad(tmp_path_factory):
    "Small data sources with one problem each, and a file and a folder of the user's"
    tmp = tmp_path_factory.mktemp('bad')
    for c in ('NORMAL', 'PNEUMONIA'):
        for i in range(10): write_image(tmp/'small'/c/f'{c[0]}{i}.jpeg', seed=i)
        for i in range(2): write_image(tmp/'two'/c/f'{c[0]}{i}.jpeg', seed=i)
    shutil.copytree(tmp/'small', tmp/'cases'); shutil.copytree(tmp/'small'/'NORMAL', tmp/'cases'/'normal')
    names = [f'small/{c}/{c[0]}{i}.jpeg' for c in ('NORMAL', 'PNEUMONIA') for i in range(10)]
    pd.DataFrame(dict(path=names[:10], label='NORMAL')).to_csv(tmp/'one_class.csv', index=False)
    pd.DataFrame(dict(path=names, label=[n.split('/')[1] for n in names], split='test')).to_csv(tmp/'test_only.csv', index=False)
    pd.DataFrame(dict(path=names + names[:1], label=[n.split('/')[1] for n in names] + ['PNEUMONIA'],
                      split=['train']*20 + ['test'])).to_csv(tmp/'dup.csv', index=False)
    (tmp/'afile').write_text('a file')
    (tmp/'mine').mkdir(); (tmp/'mine'/'summary.md').write_text('my notes'); (tmp/'mine'/'metrics.json').write_text('{}')
    return tmp

@pytest.mark.parametrize('args,msg', [
    (['--arch', 'vgj'], "unknown architecture; use vgg"),
    (['--arch', 'resnet_18'], "did you mean"),
    (['--seed', '-1'], '--seed must be at least 0, not -1'),
    (['--seed', str(2**32)], '--seed must be at most 4294967295'),
    (['--lr', 'inf'], '--lr must be a number in (0, 1], not inf'),
    (['--lr', 'nan'], '--lr must be a number in (0, 1], not nan'),
    (['--lr', '0'], '--lr must be a number in (0, 1]'),
    (['--size', '100000'], '--size must be at most 2048'),
    (['--valid-pct', 'nan'], '--valid-pct must be between 0 and 1'),
    (['--out', '{tmp}/afile'], 'afile is a file; give a folder'),
    (['--out', '{tmp}/afile/run'], 'cannot write there'),
    (['--out', '{tmp}/mine'], 'holds summary.md, metrics.json, which training would replace'),
    (['--data', '{tmp}/two'], 'too few images to hold out'),
    (['--data', '{tmp}/one_class.csv'], 'PNEUMONIA has 0 training and 0 validation image(s)'),
    (['--data', '{tmp}/test_only.csv'], 'no images to train on: all 20 are in the test split'),
    (['--data', '{tmp}/dup.csv'], 'N0.jpeg at line 2 (train, NORMAL) and line 22 (test, PNEUMONIA)'),
    (['--data', '{tmp}/cases'], 'folders NORMAL/ and normal/ differ only in case'),
    (['--bs', '64'], 'no training batch'),
])
def test_train_user_errors(bad, tmp_path, capsys, monkeypatch, args, msg):
    "Each user error: one line naming it, exit status 2, before any training, and the user's files untouched"
    monkeypatch.setenv('XRAY_CACHE', str(tmp_path/'cache'))
    argv = ['train', '--data', bad/'small', '--size', '16', '--epochs', '1', '--bs', '4', '--aug', 'none',
            '--out', tmp_path/'run'] + [a.format(tmp=bad) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('xray-fastai train: error: ') and msg in err[0], err
    assert not (tmp_path/'run'/'config.json').exists()
    assert (bad/'mine'/'summary.md').read_text() == 'my notes' and (bad/'mine'/'metrics.json').read_text() == '{}'

def _damage(run, tmp_path, change):
    "A copy of the trained model folder, changed by `change(folder)` with the weights' checksum kept up to date"
    from xray_fastai.export import file_sha256
    d = Path(shutil.copytree(run['out'], tmp_path/'model'))
    change(d)
    cfg = json.loads((d/'config.json').read_text()); cfg['weights_sha256'] = file_sha256(d/'model.safetensors')
    (d/'config.json').write_text(json.dumps(cfg))
    return d

def _nan_weights(d):
    from safetensors.torch import load_file, save_file
    sd = load_file(d/'model.safetensors'); k = next(k for k, v in sd.items() if v.is_floating_point())
    sd[k][...] = float('nan'); save_file(sd, d/'model.safetensors')

def _nan_stats(d):
    cfg = json.loads((d/'config.json').read_text()); cfg['stats'][0] = float('nan'); (d/'config.json').write_text(json.dumps(cfg))

@pytest.mark.parametrize('args,msg', [
    (['--bs', '0'], '--bs must be at least 1, not 0'),
    (['--bs', '-1'], '--bs must be at least 1, not -1'),
    (['--csv', '{tmp}'], 'is a folder; give a file name'),
    (['--csv', '{data}/NORMAL/IM-0000-0001.jpeg/p.csv'], 'cannot create its folder'),
    ('nan_weights', 'hold NaN or infinite values'),
    ('nan_stats', 'stats must be [mean, std] of pixels on a 0..1 scale: finite'),
])
def test_predict_user_errors(run, tmp_path, capsys, args, msg):
    "Each user error: one line naming it, exit status 2; never a table of labels with NaN probabilities"
    model = run['out']
    if isinstance(args, str): model, args = _damage(run, tmp_path, {'nan_weights': _nan_weights, 'nan_stats': _nan_stats}[args]), []
    argv = ['predict', model, run['data']/'test', *[a.format(tmp=tmp_path, data=run['data']/'test') for a in args]]
    assert main(list(map(str, argv))) == 2
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('xray-fastai predict: error: ') and msg in err[0], err
    assert 'NORMAL' not in out

def test_predict_missing_file_and_exit_status(run, capsys):
    assert main(['predict', str(run['out']), str(run['tmp']/'missing.jpeg')]) == 1
    assert 'missing.jpeg: no such file' in capsys.readouterr().err

def test_predict_non_utf8_file_names(run, tmp_path):
    "A file name that is not UTF-8 is printed and written to the CSV with its bytes as \\xNN: the CSV opens in pandas and csv, and names the file"
    import csv as csvmod, re
    folder = tmp_path/'scans'; folder.mkdir()
    name = os.fsdecode(b'caf\xe9.jpeg')  # Latin-1, as an old scanner writes it: a real file name on disk
    shutil.copy(next((run['data']/'test'/'NORMAL').iterdir()), folder/name)
    (folder/os.fsdecode(b'bad\xff.jpeg')).write_bytes(b'not an image')  # an error row names it too
    res = cli('predict', run['out'], folder, '--csv', tmp_path/'p.csv', '--cpu', check=1)
    assert '1 image(s) predicted, 1 unreadable' in res.stdout and 'caf\\xe9.jpeg' in res.stdout and 'bad\\xff.jpeg' in res.stderr
    raw = (tmp_path/'p.csv').read_bytes(); raw.decode('utf-8')  # valid UTF-8
    df = pd.read_csv(tmp_path/'p.csv')  # pandas' defaults
    with open(tmp_path/'p.csv', newline='') as f: rows = list(csvmod.DictReader(f))  # Python's csv, default encoding
    assert df.path.tolist() == [r['path'] for r in rows] == [str(folder/'bad\\xff.jpeg'), str(folder/'caf\\xe9.jpeg')]
    assert 'bad\\xff.jpeg' in df.error[0] and df.label[1] in ('NORMAL', 'PNEUMONIA')
    # the documented way back to the file: each \\xNN is the byte NN
    back = [re.sub(rb'\\x([0-9a-f]{2})', lambda m: bytes.fromhex(m[1].decode()), p.encode()) for p in df.path]
    assert [os.path.exists(b) for b in back] == [True, True]

def test_system_errors(monkeypatch, capsys):
    "A full disk or a refused permission is one line with what to do; any other OSError is a bug and keeps its traceback"
    from xray_fastai import predict  # where the `predict` command takes `load_model` from when it runs
    def full(*a, **kw): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), '/data/run/model.safetensors')
    monkeypatch.setattr(predict, 'load_model', full)
    assert main(['predict', 'model', 'x.jpeg']) == 2
    assert capsys.readouterr().err == ('xray-fastai predict: error: /data/run/model.safetensors: No space left on device; '
                                       'free some space, or write elsewhere (--out, XRAY_CACHE)\n')
    def io_error(*a, **kw): raise OSError(errno.EIO, os.strerror(errno.EIO), 'x')
    monkeypatch.setattr(predict, 'load_model', io_error)
    with pytest.raises(OSError): main(['predict', 'model', 'x.jpeg'])

@pytest.mark.parametrize('code,advice', [(errno.ENOSPC, 'free some space'), (errno.EACCES, "check the file's permissions"),
                                         (errno.EIO, 'the disk or file system failed'), (errno.EFBIG, 'ulimit -f')])
def test_a_failed_csv_write_is_one_line_and_keeps_the_old_file(run, tmp_path, capsys, monkeypatch, code, advice):
    "Any OSError while writing a file (here the CSV, failing as it is moved into place) is one line naming it; the old file stays, no temporary file"
    from xray_fastai import core
    csv = tmp_path/'p.csv'; csv.write_text('old predictions')
    def refused(src, dst): raise OSError(code, os.strerror(code))
    monkeypatch.setattr(core.os, 'replace', refused)
    assert main(['predict', str(run['out']), str(run['data']/'test'/'NORMAL'), '--csv', str(csv), '--cpu']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"xray-fastai predict: error: {csv}: {os.strerror(code)}; ") and advice in err[0], err
    assert csv.read_text() == 'old predictions' and sorted(p.name for p in tmp_path.iterdir()) == ['p.csv']

FSIZE = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as `ulimit -f` in a shell that ignores it; else the process is killed
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from xray_fastai.cli import main
sys.exit(main(sys.argv[1:]))
"""

def fsize_cli(limit:int, *args, cache=None):
    "The command under a real file-size limit (RLIMIT_FSIZE): writes past `limit` bytes fail with EFBIG"
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]), 'MPLBACKEND': 'agg',
           'PYTHONWARNINGS': 'ignore', **({'XRAY_CACHE': str(cache)} if cache else {})}
    return subprocess.run([sys.executable, '-c', FSIZE.format(limit=limit), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=900)

@pytest.mark.skipif(not hasattr(__import__('resource'), 'RLIMIT_FSIZE'), reason='needs POSIX resource limits')
@pytest.mark.parametrize('limit,fails', [(400_000, 'models/best.pth'), (3_000_000, 'run/checkpoint.pth')])
def test_a_file_size_limit_while_training_is_one_line(bad, tmp_path, limit, fails):
    "EFBIG, really: torch.save of the best weights or the checkpoint past `ulimit -f` (torch's 'unexpected pos') is one line naming the file"
    cache, out = tmp_path/'cache', tmp_path/'run'
    res = fsize_cli(limit, 'train', '--data', bad/'small', '--size', 16, '--epochs', 1, '--bs', 4, '--aug', 'none', '--out', out, cache=cache)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(err) == 1 and 'File too large; the file-size limit' in err[0], res.stderr[-3000:]
    assert err[0].startswith("xray-fastai train: error: /") and f"{fails}: File too large" in err[0] and 'Traceback' not in res.stderr
    assert not (out/'config.json').exists() and not [p for p in out.rglob('*') if p.name.endswith('.tmp')]

@pytest.mark.skipif(not hasattr(__import__('resource'), 'RLIMIT_FSIZE'), reason='needs POSIX resource limits')
def test_a_file_size_limit_while_writing_a_model_or_csv_is_one_line(run, tmp_path):
    "EFBIG from safetensors' writer (its own SafetensorError) and from pandas: one line, exit 2, the old files kept"
    from xray_fastai.export import WEIGHTS
    csv = tmp_path/'p.csv'; csv.write_text('old')
    res = fsize_cli(200, 'predict', run['out'], run['data']/'test'/'NORMAL', '--csv', csv, '--cpu')
    assert res.returncode == 2 and res.stderr.strip() == (f"xray-fastai predict: error: {csv}: File too large; the file-size limit of "
                                                         "this process (`ulimit -f`) or of the file system was reached; raise the limit, "
                                                         "or write elsewhere"), res.stderr[-3000:]
    assert csv.read_text() == 'old' and sorted(p.name for p in tmp_path.iterdir()) == ['p.csv']
    from xray_fastai.export import _save_weights
    code = ("import resource, signal, torch; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
            "from xray_fastai.core import atomic_write; from xray_fastai.export import _save_weights; from functools import partial\n"
            f"atomic_write({str(tmp_path/WEIGHTS)!r}, partial(_save_weights, {{'w': torch.zeros(10_000)}}))")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env={**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])})
    assert f"XrayWriteError: [Errno 27] File too large; the file-size limit" in res.stderr and str(tmp_path/WEIGHTS) in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['p.csv']

def test_torch_save_through_a_python_file_reports_a_full_disk():
    "What the CLI relies on: `torch.save` to a path fails on a full disk with a RuntimeError, through a Python file with ENOSPC"
    import torch
    from xray_fastai.learner import _save_through_file
    if not os.path.exists('/dev/full'): pytest.skip('needs /dev/full, a device whose every write fails with ENOSPC')
    with pytest.raises(OSError) as e: _save_through_file(lambda f: torch.save({'w': torch.zeros(10_000)}, f), Path('/dev/full'))
    assert e.value.errno == errno.ENOSPC and e.value.filename == '/dev/full'

@pytest.mark.parametrize('full', ['checkpoint.pth', 'best.pth'])
def test_full_disk_while_training_is_one_line(bad, tmp_path, capsys, monkeypatch, full):
    "A disk that fills up during training: the checkpoint (in --out) or the best epoch's weights cannot be written"
    if not os.path.exists('/dev/full'): pytest.skip('needs /dev/full')
    import builtins
    from xray_fastai import learner
    def full_open(fn, mode='r', *a, **kw):  # files of that name are written to /dev/full, as onto a full disk
        return builtins.open('/dev/full' if 'w' in mode and Path(fn).name.lstrip('.').startswith(full) else fn, mode, *a, **kw)
    monkeypatch.setattr(learner, 'open', full_open, raising=False)
    monkeypatch.setenv('XRAY_CACHE', str(tmp_path/'cache'))
    out = tmp_path/'run'
    assert main(['train', '--data', str(bad/'small'), '--size', '16', '--epochs', '1', '--bs', '4', '--aug', 'none', '--out', str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('xray-fastai train: error: ') and err[0].endswith(
        f"{full}: No space left on device; free some space, or write elsewhere (--out, XRAY_CACHE)"), err
    if full == 'checkpoint.pth': assert str(out/'checkpoint.pth') in err[0]
    assert not (out/'config.json').exists() and not list(out.glob('.*.tmp'))  # nothing that looks finished, no temporary files

@pytest.mark.skipif(os.name != 'posix' or os.geteuid() == 0, reason='root writes into read-only folders')
def test_read_only_out_is_refused_before_training(bad, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('XRAY_CACHE', str(tmp_path/'cache'))
    out = tmp_path/'readonly'; out.mkdir(); out.chmod(0o555)
    try:
        assert main(['train', '--data', str(bad/'small'), '--size', '16', '--epochs', '1', '--bs', '4', '--out', str(out)]) == 2
        out_text, err = capsys.readouterr()
        assert 'cannot write there' in err and 'epoch' not in out_text  # refused before any training
    finally: out.chmod(0o755)

@pytest.fixture(scope='module')
def ensemble(run):
    "The fixture's run as an ensemble of 3 (same data, options and seed)"
    out = run['tmp']/'ens'
    res = cli('train', '--data', run['data'], '--size', 32, '--epochs', 1, '--bs', 8, '--aug', 'none', '--out', out,
              '--ensemble', 3, cache=run['tmp']/'cache', check=0)
    return dict(out=out, res=res)

def _bytes(folder:Path) -> dict: return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}

def test_ensemble_folder_members_threshold_and_scores(run, ensemble):
    import numpy as np, torch
    from xray_fastai.predict import load_model, Ensemble
    from xray_fastai.learner import pick_threshold
    out = ensemble['out']
    assert sorted(p.name for p in out.iterdir()) == sorted(['config.json', 'member0', 'member1', 'member2', 'metrics.json', 'neighbours.json', 'neighbours.safetensors', 'examples',
        'per_class.csv', 'confusion.png', 'roc.png', 'training_log.csv', 'summary.md'])
    for i in range(3): assert sorted(p.name for p in (out/f'member{i}').iterdir()) == ['config.json', 'model.safetensors']
    cfg = json.loads((out/'config.json').read_text())
    assert [m['folder'] for m in cfg['ensemble']] == ['member0', 'member1', 'member2'] and cfg['training']['ensemble'] == 3
    assert [json.loads((out/f'member{i}'/'config.json').read_text())['training']['seed'] for i in range(3)] == [0, 1, 2]
    # member 0 is the single model of the same run; the others differ
    from safetensors.torch import load_file
    w0, w1, single = (load_file(f/'model.safetensors') for f in (out/'member0', out/'member1', run['out']))
    assert w0.keys() == single.keys() and all(torch.equal(w0[k], single[k]) for k in w0)
    assert not all(torch.equal(w0[k], w1[k]) for k in w0)
    pred = load_model(out, device='cpu')
    assert isinstance(pred.model, Ensemble) and 'ensemble of 3' in repr(pred) and pred.threshold == cfg['threshold']
    files = sorted((run['data']/'test').rglob('*.jpeg'))
    members = [load_model(out/f'member{i}', device='cpu').predict(files) for i in range(3)]
    np.testing.assert_allclose(pred.predict(files).prob_PNEUMONIA, np.mean([m.prob_PNEUMONIA for m in members], 0), atol=1e-5)
    metrics = json.loads((out/'metrics.json').read_text())
    assert metrics['threshold']['threshold'] == cfg['threshold'] and metrics['argmax']['n'] == 20
    summary = (out/'summary.md').read_text()
    assert '| ensemble | 3 |' in summary and 'members’ averaged probabilities' in summary
    res = cli('predict', out, run['data']/'test', check=0)
    assert 'ensemble of 3' in res.stdout

def test_ensemble_resume_keeps_finished_members(run, ensemble, tmp_path):
    out = tmp_path/'ens'
    shutil.copytree(ensemble['out'], out)
    before = _bytes(out)
    for f in ('config.json', 'summary.md', 'metrics.json'): (out/f).unlink()
    shutil.rmtree(out/'member2')  # interrupted before the third member
    args = ['train', '--data', run['data'], '--size', 32, '--epochs', 1, '--bs', 8, '--aug', 'none', '--out', out, '--ensemble', 3]
    res = cli(*args, cache=run['tmp']/'cache', check=2)
    assert 'holds an interrupted run' in res.stderr
    res = cli(*args, '--resume', cache=run['tmp']/'cache', check=0)
    assert res.stdout.count('finished before the interruption, kept') == 2
    after = _bytes(out)
    import torch
    from safetensors.torch import load
    for i in range(2):  # kept members untouched
        for f in ('config.json', 'model.safetensors'): assert after[f'member{i}/{f}'] == before[f'member{i}/{f}'], (i, f)
    w, w0 = load(after['member2/model.safetensors']), load(before['member2/model.safetensors'])
    assert all(torch.equal(w[k], w0[k]) for k in w0)  # the third trained as it would have been (safetensors' header order varies)
    assert json.loads(after['config.json'])['threshold'] == json.loads(before['config.json'])['threshold']

@pytest.mark.parametrize('change,msg', [
    (lambda d: (d/'member1'/'model.safetensors').write_bytes(b'x' + (d/'member1'/'model.safetensors').read_bytes()[1:]), 'does not match the SHA-256'),
    (lambda d: (d/'member2'/'config.json').unlink(), 'member2/config.json: no such file'),
    (lambda d: (d/'member0'/'config.json').write_text((d/'member0'/'config.json').read_text().replace('"bs": 8', '"bs": 9')), 'does not match the SHA-256 recorded in'),
    (lambda d: shutil.rmtree(d/'member1'), 'member1/config.json: no such file'),
])
def test_damaged_ensemble_members_are_one_line_errors(ensemble, tmp_path, capsys, change, msg):
    d = tmp_path/'ens'
    shutil.copytree(ensemble['out'], d)
    change(d)
    assert main(['predict', str(d), str(d/'summary.md')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err

@pytest.mark.skipif(os.name != 'posix', reason='the folder lock is POSIX flock')
def test_two_commands_writing_into_one_out_at_once(bad, tmp_path, capsys, monkeypatch):
    "While one command writes into --out (it holds the folder's lock), a second one is refused in one line and changes nothing there"
    import fcntl
    monkeypatch.setenv('XRAY_CACHE', str(tmp_path/'cache'))
    out = tmp_path/'run'; out.mkdir(); (out/'checkpoint.pth').write_bytes(b'the first command is writing this')
    kaggle = tmp_path/'kaggle'  # the report checks its data before --out: it needs a test split and the pneumonia types
    for split in ('train', 'test'):
        shutil.copytree(bad/'small'/'NORMAL', kaggle/split/'NORMAL')
        for i, p in enumerate(sorted((bad/'small'/'PNEUMONIA').iterdir())):
            (kaggle/split/'PNEUMONIA').mkdir(parents=True, exist_ok=True); shutil.copyfile(p, kaggle/split/'PNEUMONIA'/f'person{i}_virus_{i}.jpeg')
    fd = os.open(out, os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the first command does
    try:
        for cmd, data in (('train', bad/'small'), ('report', kaggle)):
            assert main([cmd, '--data', str(data), '--out', str(out), '--resume']) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert err == [f"xray-fastai {cmd}: error: --out {out}: another xray-fastai command is writing into it now; wait until it "
                           "ends, or choose another --out"], err
        assert sorted(p.name for p in out.iterdir()) == ['checkpoint.pth']
    finally: os.close(fd)
    assert main(['train', '--data', str(bad/'small'), '--out', str(out)]) == 2  # the lock gone: the folder's own rules again
    assert 'holds an interrupted run' in capsys.readouterr().err

def test_a_data_folder_with_a_symlink_loop_ends(tmp_path):
    "Folder symlinks that loop (to a parent, to the folder itself) are not followed: listing ends, with each real image once"
    from xray_fastai.items import xray_items
    from xray_fastai.predict import image_files
    for c in ('NORMAL', 'PNEUMONIA'):
        for i in range(3): write_image(tmp_path/'d'/c/f'{c[0]}{i}.jpeg', seed=i)
    (tmp_path/'d'/'NORMAL'/'up').symlink_to('..'); (tmp_path/'d'/'PNEUMONIA'/'self').symlink_to(tmp_path/'d')
    assert len(image_files(tmp_path/'d')) == 6 and len(xray_items(tmp_path/'d')) == 6
