"""The course report's experiments as tables: each variant of a base configuration trained over seeds.

Not a test. Writes bench/results/exp_GROUP.csv (one row per run) and exp_GROUP.md (mean ± std per variant,
the command, the hardware). Example:

    XRAY_DATA=../shared/data/chest_xray python bench/experiments.py --group balance --size 96 --epochs 5
"""
from pathlib import Path
from fastcore.script import call_parse
from xray_fastai.core import DEFAULTS
from xray_fastai.experiments import ResultsWriter, compare, mean_std

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
         task:str=DEFAULTS.task, # 'binary' or 'multiclass'
         size:int=96, # Image side in pixels
         epochs:int=5, # Epochs per run
         lr:float=DEFAULTS.lr, # Peak learning rate of the base configuration
         bs:int=DEFAULTS.bs, # Batch size
         seeds:str='0,1,2', # Comma-separated seeds
         data:str=None, # Data folder; $XRAY_DATA by default
         name:str=None, # Results file name under bench/results; exp_TASK_GROUP by default
        ):
    "Run one experiment group over seeds and write its table"
    w = ResultsWriter(name or f'exp_{task}_{group}', Path(__file__).parent/'results')
    seeds = [int(s) for s in seeds.split(',')]
    base = dict(source=data, task=task, arch='vgg', size=size, epochs=epochs, lr=lr, bs=bs, balance='none', aug='report',
                split='patient', learner_kwargs=dict(model_kwargs=dict(widths=(16, 32, 64, 128))))
    for variant, config in groups(size)[group].items(): df = w.add(compare({variant: config}, seeds, **base))
    cols = [c for c in ('test_accuracy', 'test_roc_auc', 'test_balanced_accuracy', 'test_f1', 'test_f1_macro', 'test_sensitivity',
                        'test_specificity', 'test_thr_accuracy', 'valid_roc_auc', 'valid_balanced_accuracy', 'train_s') if c in df]
    print(w.write(f"Experiment: {group} ({task})", f"Base: vgg (widths 16-128), {size} px, {epochs} epochs, lr {lr}, bs {bs}, "
                  f"balance none, aug report, patient split; seeds {seeds}.", mean_std(df, cols)))
