"""The course report's experiments as tables: each variant of a base configuration trained over seeds.

Not a test. Writes bench/results/exp_GROUP.csv (one row per run) and exp_GROUP.md (mean ± std per variant,
the command, the hardware). Example:

    XRAY_DATA=../shared/data/chest_xray python bench/experiments.py --group balance --size 96 --epochs 5
"""
import shlex, sys, time
from pathlib import Path
import pandas as pd
from fastcore.script import call_parse
from xray_fastai.experiments import compare, mean_std, hardware

def groups(size:int) -> dict:
    "Variants of each experiment group, as overrides of the base configuration"
    h = round(size * 200 / 224)  # the report's 224×200 aspect ratio
    return dict(
        balance={b: dict(balance=b) for b in ('none', 'undersample', 'weighted', 'oversample')},
        lr={f'lr {lr:g}': dict(lr=lr) for lr in (1e-2, 1e-3, 1e-4, 1e-5)},
        size={f'{size}x{size}': dict(size=size), f'{size}x{h}': dict(size=(size, h))},
        aug={a: dict(aug=a) for a in ('none', 'light', 'report')},
        split={s: dict(split=s) for s in ('patient', 'report')},
        arch={'vgg (16-128)': dict(arch='vgg'), 'xresnet18': dict(arch='xresnet18', learner_kwargs={}),
              'resnet18 (timm, scratch)': dict(arch='resnet18', learner_kwargs={})},
    )

@call_parse
def main(group:str='balance', # Experiment group: balance, lr, size, aug, split or arch
         task:str='binary', # 'binary' or 'multiclass'
         size:int=96, # Image side in pixels
         epochs:int=5, # Epochs per run
         lr:float=2e-3, # Peak learning rate of the base configuration
         bs:int=64, # Batch size
         seeds:str='0,1,2', # Comma-separated seeds
         data:str=None, # Data folder; $XRAY_DATA by default
         name:str=None, # Results file name under bench/results; exp_TASK_GROUP by default
        ):
    "Run one experiment group over seeds and write its table"
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    seeds = [int(s) for s in seeds.split(',')]
    base = dict(source=data, task=task, arch='vgg', size=size, epochs=epochs, lr=lr, bs=bs, balance='none', aug='report',
                split='patient', learner_kwargs=dict(model_kwargs=dict(widths=(16, 32, 64, 128))))
    name = name or f'exp_{task}_{group}'
    start = time.perf_counter()
    parts = []
    for variant, config in groups(size)[group].items():
        parts.append(compare({variant: config}, seeds, **base))
        df = pd.concat(parts, ignore_index=True)
        df.to_csv(out/f'{name}.csv', index=False)  # after every variant: a stopped run keeps its rows
    cols = [c for c in ('test_accuracy', 'test_roc_auc', 'test_balanced_accuracy', 'test_f1', 'test_f1_macro', 'test_sensitivity',
                        'test_specificity', 'test_thr_accuracy', 'valid_roc_auc', 'valid_balanced_accuracy', 'train_s') if c in df]
    cmd = 'python bench/experiments.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
    md = (f"# Experiment: {group} ({task})\n\nBase: vgg (widths 16-128), {size} px, {epochs} epochs, lr {lr}, bs {bs}, "
          f"balance none, aug report, patient split; seeds {seeds}.\n\nHardware: {hardware()}. "
          f"Total wall time {time.perf_counter()-start:.0f} s.\n\nCommand: `{cmd}`\n\n```\n{mean_std(df, cols).to_string()}\n```\n")
    (out/f'{name}.md').write_text(md)
    print(md)
