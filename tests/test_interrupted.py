"Interrupted training: `xray-fastai train` killed mid-run (SIGINT or SIGKILL) resumes from its last checkpoint and ends as a run never interrupted."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd, pytest
from conftest import write_image
from xray_fastai.learner import read_checkpoint, CHECKPOINT
from xray_fastai.cli import main

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 8  # enough epochs after the first checkpoint for a second Ctrl-C when Python swallows the first (see `start_and_kill`)
REPORT = ['config.json', 'model.safetensors', 'metrics.json', 'per_class.csv', 'confusion.png', 'roc.png', 'most_confused.png',
          'training_log.csv', 'summary.md', 'neighbours.json', 'neighbours.safetensors', 'examples']

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "A small Kaggle-layout folder: 24 images of each class to train on, 10 to test"
    root = tmp_path_factory.mktemp('interrupted')/'chest_xray'
    for split, n in (('train', 24), ('test', 10)):
        for i in range(n):
            write_image(root/split/'NORMAL'/f'IM-{i:04d}-0001.jpeg', seed=i)
            write_image(root/split/'PNEUMONIA'/f'person{i}_virus_{i}.jpeg', seed=100+i)
    return root

def train_here(cmd, cache) -> int:
    "Run the `xray-fastai train` command line `cmd` in this process (no start-up time); its exit status"
    old = os.environ.get('XRAY_CACHE')
    os.environ['XRAY_CACHE'] = str(cache)
    try: return main(cmd[3:])
    finally:
        if old is None: del os.environ['XRAY_CACHE']
        else: os.environ['XRAY_CACHE'] = old

@pytest.fixture(scope='module')
def straight(data, tmp_path_factory):
    "The training log of the same run, never interrupted"
    tmp = tmp_path_factory.mktemp('straight')
    assert train_here(command(data, tmp/'run'), tmp/'cache') == 0
    return pd.read_csv(tmp/'run'/'training_log.csv')

def command(data, out, *extra):
    return [sys.executable, '-m', 'xray_fastai.cli', 'train', '--data', str(data), '--size', '32', '--epochs', str(EPOCHS),
            '--bs', '8', '--aug', 'none', '--out', str(out), *extra]

def environ(cache):
    return {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]), 'MPLBACKEND': 'agg',
            'PYTHONWARNINGS': 'ignore', 'XRAY_CACHE': str(cache)}

def start_and_kill(cmd, env, ckpt, sig):
    "Start `cmd`, send `sig` once the first checkpoint is written, until it stops; the process's stderr"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not ckpt.exists():
        assert proc.poll() is None, f"the run ended before its first checkpoint:\n{proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, 'no checkpoint after 300 s'
        time.sleep(0.02)
    while proc.poll() is None:  # again, as a user presses Ctrl-C again: Python ignores a KeyboardInterrupt raised in a
        proc.send_signal(sig)   # `__del__`, such as a DataLoader iterator's clean-up
        try: proc.wait(1)
        except subprocess.TimeoutExpired: pass
    err = proc.stderr.read()
    assert proc.returncode != 0, 'the run finished before it could be interrupted'
    return err

@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGKILL], ids=['SIGINT', 'SIGKILL'])
def test_killed_run_resumes_and_trains_all_epochs(data, straight, tmp_path, capsys, sig):
    out, env = tmp_path/'run', environ(tmp_path/'cache')
    err = start_and_kill(command(data, out), env, out/CHECKPOINT, sig)
    done = read_checkpoint(out)['epoch'] + 1  # the file under the final name is always complete
    assert 1 <= done < EPOCHS, err[-3000:]
    assert [p.name for p in out.iterdir() if not p.name.startswith('.')] == [CHECKPOINT]  # no report or model yet
    if sig == signal.SIGINT:
        assert 'Interrupted; to continue from the last finished epoch:' in err and 'xray-fastai train: interrupted' in err
        assert os.listdir(out) == [CHECKPOINT]  # a write interrupted by Ctrl-C removes its temporary file
    assert main(command(data, out)[3:]) == 2 and 'holds an interrupted run; pass --resume' in capsys.readouterr().err
    assert train_here(command(data, out, '--resume'), tmp_path/'cache') == 0, capsys.readouterr().err[-3000:]
    assert sorted(os.listdir(out)) == sorted(REPORT)  # checkpoint and temporary files gone
    log = pd.read_csv(out/'training_log.csv')
    assert len(log) == EPOCHS
    pd.testing.assert_frame_equal(log, straight)  # number for number the run that was never interrupted
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['training']['epochs'] == EPOCHS and len(cfg['training']['history']) == EPOCHS

def test_resume_with_other_options_is_refused(data, tmp_path, capsys):
    out, env = tmp_path/'run', environ(tmp_path/'cache')
    start_and_kill(command(data, out), env, out/CHECKPOINT, signal.SIGINT)
    before = (out/CHECKPOINT).read_bytes()
    assert train_here(command(data, out, '--resume', '--lr', '0.01'), tmp_path/'cache') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'written by a run with other settings (lr=0.002 then, 0.01 now)' in err[0]
    assert (out/CHECKPOINT).read_bytes() == before  # left as it was

def test_resume_needs_a_checkpoint(data, tmp_path, capsys):
    assert main(['train', '--data', str(data), '--resume']) == 2
    assert '--resume needs the --out folder' in capsys.readouterr().err
    assert main(['train', '--data', str(data), '--out', str(tmp_path/'new'), '--resume']) == 2
    assert 'holds no checkpoint of an interrupted run to resume' in capsys.readouterr().err

def test_ctrl_c_stops_at_the_next_batch_and_restores_the_handler():
    "`interrupt_between_batches` takes note of SIGINT and raises it at a batch boundary; the old handler comes back"
    from fastai.callback.core import Callback
    from fastai.test_utils import synth_learner
    from xray_fastai.learner import interrupt_between_batches
    class CtrlC(Callback):
        def after_batch(self):
            if self.iter == 1: os.kill(os.getpid(), signal.SIGINT)
    learn, before = synth_learner(cbs=CtrlC()), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with interrupt_between_batches(learn): learn.fit(1)
    assert learn.iter == 2   # the batch under way finished; the next one did not start
    assert signal.getsignal(signal.SIGINT) is before
    assert [type(c).__name__ for c in learn.cbs] == [type(c).__name__ for c in synth_learner(cbs=CtrlC()).cbs]
