"""Benchmark: train classifiers over seeds on real data and write a results table.

Not a test: it trains for minutes per seed. Results go to bench/results/NAME.csv (one row per seed) and
NAME.md (mean ± std, the command, the hardware). The defaults are the default run (`xray_fastai.core.DEFAULTS`)
but for the epochs. Example (the issue-3 CPU configuration):

    XRAY_DATA=../shared/data/chest_xray python bench/classifiers.py --name binary_cpu --task binary --epochs 12
"""
from pathlib import Path
from fastcore.script import call_parse
from xray_fastai.core import DEFAULTS
from xray_fastai.experiments import ResultsWriter, run_seeds, mean_std

@call_parse
def main(name:str='binary_cpu', # Results file name under bench/results
         task:str=DEFAULTS.task, # 'binary' or 'multiclass'
         arch:str=DEFAULTS.arch, # Model architecture
         size:int=DEFAULTS.size, # Image side in pixels
         epochs:int=12, # Epochs per seed
         lr:float=DEFAULTS.lr, # Peak learning rate
         bs:int=DEFAULTS.bs, # Batch size
         balance:str=DEFAULTS.balance, # Class balancing
         aug:str=DEFAULTS.aug, # Augmentation preset
         split:str=DEFAULTS.split, # Validation split protocol
         widths:str='16,32,64,128', # VGG stage widths (comma-separated); ignored by other architectures
         seeds:str='0,1,2', # Comma-separated seeds
         data:str=None, # Data folder; $XRAY_DATA by default
        ):
    "Train `arch` on `task` once per seed and write mean ± std of the test scores"
    w = ResultsWriter(name, Path(__file__).parent/'results')
    seeds = [int(s) for s in seeds.split(',')]
    model_kwargs = dict(widths=tuple(int(w) for w in widths.split(','))) if arch == 'vgg' else {}
    for seed in seeds:
        df = w.add(run_seeds([seed], source=data, task=task, arch=arch, size=size, epochs=epochs, lr=lr, bs=bs, balance=balance,
                             aug=aug, split=split, learner_kwargs=dict(model_kwargs=model_kwargs)))
        print(f"seed {seed}: test accuracy {df.test_accuracy.iloc[-1]:.3f}", flush=True)
    cols = [c for c in ('test_accuracy', 'test_roc_auc', 'test_balanced_accuracy', 'test_f1', 'test_f1_macro',
                        'test_sensitivity', 'test_specificity', 'test_thr_accuracy', 'test_thr_sensitivity',
                        'test_thr_specificity', 'valid_roc_auc', 'train_s') if c in df]
    print(w.write(name, f"{task}, {arch} {model_kwargs}, {size} px, {epochs} epochs, lr {lr}, bs {bs}, balance {balance}, aug {aug}, "
                        f"split {split}; seeds {seeds}", mean_std(df.assign(variant=name), cols).T))
