"""Benchmark: the shift study's levers, each over seeds on real data, with ensembles and transductive rows apart.

Not a test: it trains one classifier per lever and seed (about a minute each at 64 px on a 2-core CPU), binary or, with
`--task multiclass`, normal / bacterial / viral (scored at the argmax, with each class's recall; the levers that need two
classes, `test_share` and `batch_stats_norm`, are left out there).
Every model's threshold is chosen on validation (patients of the training folder); the test labels are read only
to score. Each model of the `--extras` levers (the base recipe by default) is also scored with test-time augmentation (fastai's `tta`) and, in rows marked
transductive, after `adapt_bn` on the unlabeled test images and after EM prior correction. After all seeds, the
seeds' probabilities of each lever are averaged (an ensemble, threshold from the ensemble's validation scores).
The ensembles' threshold is the mean of their seeds' validation thresholds (each seed has its own
validation split). Results: bench/results/NAME.csv (one row per lever, seed and scoring), NAME_probs.csv.gz (every probability),
NAME.md (mean ± std). Example:

    XRAY_DATA=../shared/data/chest_xray python bench/shift.py --name shift_levers_cpu
"""
from pathlib import Path
import numpy as np, pandas as pd
from fastcore.script import call_parse
from fastai.basics import defaults
from fastai.callback.progress import ProgressCallback
from xray_fastai.evaluate import classification_scores, per_class_recall
from xray_fastai.learner import pick_threshold
from xray_fastai.experiments import train_classifier, mean_std, ResultsWriter
from xray_fastai.adapt import adapt_bn
from xray_fastai.shift import LEVERS, lever_settings, em_prior, prior_corrected, expected_calibration_error, fit_temperature, with_temperature

ORDER = ['base', 'weighted', 'undersample', 'test_share', 'per_image_norm', 'hist_equalize', 'photometric', 'lung_crop',
         'batch_stats_norm', 'group_norm', 'instance_norm', 'label_smoothing', 'mixup', 'lower_lr', 'random_erasing',
         'longer_early_stop']
KIND = {'test_share': 'uses the test pneumonia share', 'batch_stats_norm': 'transductive (test batch statistics)'}
COLS = ['accuracy', 'roc_auc', 'sensitivity', 'specificity', 'balanced_accuracy', 'f1']
MULTI_COLS = ['accuracy', 'roc_auc', 'balanced_accuracy', 'f1_macro', 'recall_NORMAL', 'recall_BACTERIA', 'recall_VIRUS']
TWO_CLASS_LEVERS = ('test_share', 'batch_stats_norm')  # a PNEUMONIA share; one-class test batches (see the chapter)

def class_scores(probs, targets, thr=None) -> dict:
    "`classification_scores`, with each class's recall when there are three classes"
    r = classification_scores(probs, targets, thr)
    if probs.shape[1] == 3: r.update({f'recall_{c}': v for c, v in zip(('NORMAL', 'BACTERIA', 'VIRUS'), per_class_recall(probs, targets))})
    return r

def scores(valid:tuple, test:tuple, thr:float=None) -> dict:
    "Test scores at the argmax and, for two classes, at `thr` (Youden on `valid` when None), with the validation AUC and ECEs"
    ece = dict(valid_ece=expected_calibration_error(*valid), test_ece=expected_calibration_error(*test))
    a, v = class_scores(*test), class_scores(*valid)
    if valid[0].shape[1] > 2:
        return dict(**{f'test_{k}': a[k] for k in MULTI_COLS}, valid_roc_auc=v['roc_auc'],
                    valid_balanced_accuracy=v['balanced_accuracy'], **ece)
    thr = pick_threshold(valid[0][:, 1], valid[1], 'youden') if thr is None else thr
    t = classification_scores(*test, thr)
    return dict(**{f'test_{k}': a[k] for k in COLS}, **{f'test_thr_{k}': t[k] for k in COLS}, threshold=thr,
                valid_roc_auc=v['roc_auc'], **ece)

def preds(learn, dl) -> tuple:
    p, t = learn.get_preds(dl=dl)
    return p.numpy(), t.numpy()

@call_parse
def main(name:str='shift_levers_cpu', # Results file name under bench/results
         levers:str='all', # Comma-separated lever names, or 'all' (see `xray_fastai.shift.LEVERS`)
         task:str='binary', # 'binary' or 'multiclass'
         size:int=96, # Image side in pixels
         epochs:int=5, # Epochs per run (levers may multiply it)
         lr:float=2e-3, # Peak learning rate (levers may multiply it)
         bs:int=64, # Batch size
         seeds:str='0,1,2', # Comma-separated seeds
         extras:str='base', # Levers also scored with TTA and, in transductive rows, adapt_bn and EM prior correction
         data:str=None, # Data folder; $XRAY_DATA by default
        ):
    "Train every lever once per seed and write the lever table"
    defaults.callbacks = [c for c in defaults.callbacks if c is not ProgressCallback]  # a log file, not a terminal
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    names = ORDER if levers == 'all' else levers.split(',')
    assert set(ORDER) == set(LEVERS), "every lever has a place in ORDER"
    if task == 'multiclass': names = [n for n in names if n not in TWO_CLASS_LEVERS]
    seeds = [int(s) for s in seeds.split(',')]
    base = dict(source=data, task=task, arch='vgg', size=size, epochs=epochs, lr=lr, bs=bs, balance='none', aug='report',
                split='patient', learner_kwargs=dict(model_kwargs=dict(widths=(16, 32, 64, 128))))
    res, probs = ResultsWriter(name, out), []
    def keep(variant, seed, kind, valid, test, thr=None, **extra):
        res.add(dict(variant=variant, seed=seed, kind=kind, **scores(valid, test, thr), **extra))  # a stopped run keeps its rows
        for split, (p, t) in (('valid', valid), ('test', test)):
            ps = dict(p=p[:, 1]) if p.shape[1] == 2 else {f'p{i}': p[:, i] for i in range(p.shape[1])}
            probs.append(pd.DataFrame(dict(variant=variant, seed=seed, split=split, target=t, **ps)))
    for lever in names:
        for seed in seeds:
            learn, rec = train_classifier(seed=seed, **lever_settings(lever, base))
            tdl = learn.dls.test_split_dl()
            valid, test = preds(learn, learn.dls.valid), preds(learn, tdl)
            keep(lever, seed, KIND.get(lever, 'inductive'), valid, test, train_s=rec['train_s'])
            r = res.rows[-1]
            base_thr = r.get('threshold')
            print(f"{lever} seed {seed}: test accuracy {r['test_accuracy']:.3f}, "
                  f"{'specificity' if task == 'binary' else 'NORMAL recall'} {r.get('test_specificity', r.get('test_recall_NORMAL')):.3f}", flush=True)
            if lever not in extras.split(','): continue
            tta_valid = (learn.tta(dl=learn.dls.valid)[0].numpy(), valid[1])
            keep(f'{lever} + tta', seed, 'inductive', tta_valid, (learn.tta(dl=tdl)[0].numpy(), test[1]))
            T = fit_temperature(*valid)
            prior = np.bincount(valid[1], minlength=valid[0].shape[1]) / len(valid[1])  # the training folder's shares, from validation
            calibrated = with_temperature(test[0], T)
            est = em_prior(calibrated, prior)
            keep(f'{lever} + EM prior correction', seed, 'transductive (unlabeled test predictions)', valid,
                 (prior_corrected(calibrated, prior, est), test[1]), thr=0.5, temperature=T, em_share=1 - est[0])
            adapt_bn(learn.model, tdl)
            keep(f'{lever} + test BN statistics', seed, 'transductive (unlabeled test images)', valid, preds(learn, tdl), thr=base_thr)
    allp = pd.concat(probs, ignore_index=True)
    allp.to_csv(out/f'{name}_probs.csv.gz', index=False, float_format='%.5f')
    runs = res.df
    pcols = ['p'] if 'p' in allp else sorted(c for c in allp if c.startswith('p') and c[1:].isdigit())
    for variant, g in allp[allp.split == 'test'].groupby('variant', sort=False):  # the seeds' mean probability: an ensemble
        n = g.seed.nunique()
        if n < 2: continue
        p = g[pcols].to_numpy().reshape(n, -1, len(pcols)).mean(0)  # every seed scores the same test images in the same order
        p = np.concatenate([1-p, p], 1) if pcols == ['p'] else p
        t = g.target.to_numpy()[:len(p)]
        r = runs[runs.variant == variant]
        ens, ece = class_scores(p, t), expected_calibration_error(p, t)
        if task == 'multiclass':
            res.add(dict(variant=f'{variant} (ensemble of {n})', seed=-1, kind=r.kind.iloc[0], **{f'test_{k}': ens[k] for k in MULTI_COLS}, test_ece=ece))
            continue
        thr = classification_scores(p, t, r.threshold.mean())  # the seeds' validation thresholds, averaged
        res.add(dict(variant=f'{variant} (ensemble of {n})', seed=-1, kind=r.kind.iloc[0], **{f'test_{k}': ens[k] for k in COLS},
                         **{f'test_thr_{k}': thr[k] for k in COLS}, threshold=r.threshold.mean(), test_ece=ece))
    df = res.df
    cols = ([f'test_{k}' for k in COLS[:4]] + ['test_thr_accuracy', 'test_thr_specificity'] if task == 'binary' else
            [f'test_{k}' for k in MULTI_COLS]) + ['valid_roc_auc', 'valid_ece', 'test_ece', 'train_s']
    table = mean_std(df, [c for c in cols if c in df], by=['kind', 'variant'])
    about = (f"Base: {task}, vgg (widths 16-128), {size} px, {epochs} epochs, lr {lr}, bs {bs}, no balancing, the report's "
             f"augmentation, patient split; seeds {seeds}. "
             + ("Every threshold from validation (`test_thr_*`); `test_*` at the argmax. " if task == 'binary' else "Decisions at the argmax. ")
             + "Ensembles average the seeds' probabilities.")
    md = res.write(f"Shift study: levers ({name})", about, table)
    print(md)
