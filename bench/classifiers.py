"""Benchmark: train classifiers over seeds on real data and write a results table.

Not a test: it trains for minutes per seed. Results go to bench/results/NAME.csv (one row per seed) and
NAME.md (mean ± std, the command, the hardware). Example (the issue-3 CPU configuration):

    XRAY_DATA=../shared/data/chest_xray python bench/classifiers.py --name binary_cpu --task binary --epochs 12
"""
import shlex, sys, time
import pandas as pd
from pathlib import Path
from fastcore.script import call_parse
from xray_fastai.experiments import run_seeds, mean_std, hardware

@call_parse
def main(name:str='binary_cpu', # Results file name under bench/results
         task:str='binary', # 'binary' or 'multiclass'
         arch:str='vgg', # Model architecture
         size:int=128, # Image side in pixels
         epochs:int=12, # Epochs per seed
         lr:float=2e-3, # Peak learning rate
         bs:int=64, # Batch size
         balance:str='none', # Class balancing
         aug:str='report', # Augmentation preset
         split:str='patient', # Validation split protocol
         widths:str='16,32,64,128', # VGG stage widths (comma-separated); ignored by other architectures
         seeds:str='0,1,2', # Comma-separated seeds
         data:str=None, # Data folder; $XRAY_DATA by default
        ):
    "Train `arch` on `task` once per seed and write mean ± std of the test scores"
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    seeds = [int(s) for s in seeds.split(',')]
    start = time.perf_counter()
    model_kwargs = dict(widths=tuple(int(w) for w in widths.split(','))) if arch == 'vgg' else {}
    rows = []
    for seed in seeds:
        rows += run_seeds([seed], source=data, task=task, arch=arch, size=size, epochs=epochs, lr=lr, bs=bs,
                          balance=balance, aug=aug, split=split, learner_kwargs=dict(model_kwargs=model_kwargs)).to_dict('records')
        df = pd.DataFrame(rows)
        df.to_csv(out/f'{name}.csv', index=False)  # after every seed: a stopped run keeps its rows
        print(f"seed {seed}: test accuracy {rows[-1]['test_accuracy']:.3f}", flush=True)
    cols = [c for c in ('test_accuracy', 'test_roc_auc', 'test_balanced_accuracy', 'test_f1', 'test_f1_macro',
                        'test_sensitivity', 'test_specificity', 'test_thr_accuracy', 'test_thr_sensitivity',
                        'test_thr_specificity', 'valid_roc_auc', 'train_s') if c in df]
    table = mean_std(df.assign(variant=name), cols).T
    cmd = 'python bench/classifiers.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
    md = (f"# {name}\n\n{task}, {arch} {model_kwargs}, {size} px, {epochs} epochs, lr {lr}, bs {bs}, balance {balance}, aug {aug}, "
          f"split {split}; seeds {seeds}\n\nHardware: {hardware()}. Total wall time {time.perf_counter()-start:.0f} s.\n\n"
          f"Command: `{cmd}`\n\n```\n{table.to_string()}\n```\n")
    (out/f'{name}.md').write_text(md)
    print(md)
