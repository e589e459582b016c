"Data-parallel training in two CPU processes (gloo), launched as on N GPUs: both ranks train one model, only rank 0 writes."
import os, re, shutil, subprocess, sys
from pathlib import Path
import pytest

pytest.importorskip('accelerate', reason="fastai's distributed training needs accelerate (in the dev extra)")
ROOT = Path(__file__).resolve().parents[1]
FILES = {'config.json', 'model.safetensors', 'metrics.json', 'per_class.csv', 'training_log.csv', 'confusion.png', 'roc.png',
         'most_confused.png'}

def test_two_processes(kaggle_dir, tmp_path):
    out, cache = tmp_path/'run', tmp_path/'cache'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]), 'MPLBACKEND': 'agg',
           'PYTHONWARNINGS': 'ignore', 'XRAY_CACHE': str(cache), 'OMP_NUM_THREADS': '1',
           'CUDA_VISIBLE_DEVICES': ''}  # CPU processes talking through gloo, even where there is a GPU
    # `accelerate launch --cpu` starts several CPU processes only through MPI; torchrun starts them as it does GPU ones
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           '-m', 'xray_fastai.distributed', '--data', kaggle_dir, '--out', out, '--size', '32', '--epochs', '2', '--bs', '4']
    res = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env, timeout=240)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-5000:]
    runs = re.findall(r"rank (\d) of 2: trained (\d+) batches of 4 images in 2 epoch\(s\) \(one process alone: (\d+)\); weight sum (\S+)", log)
    assert sorted(r[0] for r in runs) == ['0', '1'], log[-3000:]
    (_, n0, alone, w0), (_, n1, _, w1) = sorted(runs)
    tail = log[-3000:]
    assert int(n0) == int(n1) < int(alone), tail  # each rank trained on its share of every epoch
    assert w0 == w1, tail  # shared gradients: both ranks end with the same weights
    assert 'rank 1 of 2: wrote no files' in log, tail
    assert {p.name for p in out.iterdir()} == FILES, tail  # the report, and no checkpoint left behind
    cached = sorted(p.name for p in (cache/'tensors').iterdir())
    assert len(cached) == 1 and cached[0].endswith('.npy'), cached  # built once, by rank 0
