"""Benchmark: SimSiam pretraining on the training folder's images, then the default classifier recipe from it, over seeds.

Not a test. Three stages, each a separate command so that no locked command runs long:

- `--stage pretrain --epochs N`: pretrain (or go on from the longest cached snapshot) to N epochs, a snapshot every
  `--every` epochs (`xray_fastai.pretrain.pretrain_body`); prints the pretraining's wall and CPU time.
- `--stage study`: for each seed, the default recipe from scratch (class-weighted, `--size` px, `--epochs-clf` epochs) and
  from each snapshot of `--snapshots` (fine-tuning: the same recipe, the body starting from the snapshot), and the
  label-free probes of each snapshot: kNN (k, distance and vote weighting chosen on validation balanced accuracy) and a
  linear probe (logistic regression, C chosen on validation AUC) on the frozen body's pooled features; as references, the
  same kNN on the scratch classifier's supervised embeddings and on an untrained body (snapshot 0).
  Each model's threshold is chosen on validation (`test_thr_*`); `test_*` are at the argmax. The test labels are only read to score.
- `--transductive`: the pretraining also sees the unlabeled test images; rows marked apart.
- `--balance none --no-probes`: the classifiers with plain (unweighted) classes, the probes (which do not see the class
  weights) left out.

Results: bench/results/NAME.csv (one row per variant and seed), NAME_probs.csv.gz (every probability: variant, seed,
split, target, p), NAME.md (mean ± std). Example:

    XRAY_DATA=../shared/data/chest_xray python bench/pretrain.py --stage pretrain --epochs 60  # then --epochs 120: chunks of under 15 minutes
    XRAY_DATA=../shared/data/chest_xray python bench/pretrain.py --stage study --name pretrain_dev_cpu64 --snapshots 10,30,60,120 --seeds 0  # then 1, 2 with --append
"""
import json, sys, time
from dataclasses import replace
from pathlib import Path
import numpy as np, pandas as pd
from fastcore.script import call_parse
from fastai.basics import defaults
from fastai.callback.progress import ProgressCallback
from xray_fastai.core import DEFAULTS, TrainSettings, PretrainSettings
from xray_fastai.images import xray_source
from xray_fastai.items import xray_items
from xray_fastai.experiments import train_classifier, protocol_learner, mean_std, ResultsWriter
from xray_fastai.embeddings import get_embeddings, fit_knn, knn_probs, KNN_WIDE_KS
from xray_fastai.pretrain import pretrain_body, pretrain_mask, read_body_config, load_pretrained_body, linear_probe
sys.path.insert(0, str(Path(__file__).parent))
from shift import scores, preds, class_scores  # the shift study's scoring: argmax and validation threshold, validation AUC

COLS = ['test_accuracy', 'test_roc_auc', 'test_sensitivity', 'test_specificity', 'test_thr_accuracy', 'test_balanced_accuracy',
        'valid_roc_auc', 'valid_accuracy', 'train_s']

def probe_rows(learn, body:str, label:str) -> dict:
    "{variant: (valid, test)} of the kNN and the linear probe on `learn`'s body features (`body`: a pretrained folder, or None: as it is)"
    if body: load_pretrained_body(learn, body)
    e = {s: get_embeddings(learn, s, layer='0', cache=False, progress=False) for s in ('train', 'valid', 'test')}  # '0': the body, pooled
    knn, _ = fit_knn(e['train'], e['valid'], ks=KNN_WIDE_KS, weights=('uniform', 'distance'))
    lin, _ = linear_probe(e['train'], e['valid'])
    return {f'kNN ({label})': tuple((knn_probs(knn, e[s]), e[s].y) for s in ('valid', 'test')),
            f'linear probe ({label})': tuple((lin.predict_proba(e[s].x), e[s].y) for s in ('valid', 'test'))}

def snapshot(data:pd.DataFrame, s:PretrainSettings, body_dir:str=None) -> Path:
    "The body of `s` from the cache (`pretrain_body`), or from `body_dir` after checking its settings and image count"
    if body_dir is None: return pretrain_body(data, s, progress=False)
    folder, cfg = read_body_config(Path(body_dir)/f'epoch{s.epochs}')
    n = int(pretrain_mask(data, s.include_test).sum())
    same = json.dumps({k: v for k, v in cfg['settings'].items() if k != 'epochs'}, sort_keys=True) == s.key()
    if not same or cfg['data']['n_images'] != n: sys.exit(f"{folder}: pretrained with other settings or images than {s.key()} on {n} images")
    return folder

def average_seeds(name:str, studies:list):
    "Each study's classifiers (scratch, fine-tuned) with their seeds' test probabilities averaged image by image, scored at the argmax"
    out, cols = Path(__file__).parent/'results', ['test_accuracy', 'test_roc_auc', 'test_sensitivity', 'test_specificity', 'test_balanced_accuracy']
    res = ResultsWriter(name, out)
    for study in studies:
        probs = pd.read_csv(out/f'{study}_probs.csv.gz')
        probs = probs[(probs.split == 'test') & (probs.variant.str.contains('fine-tuning') | (probs.variant == 'scratch'))]
        for variant, g in probs.groupby('variant', sort=False):
            seeds = [d for _, d in g.groupby('seed')]
            assert all((d.target.to_numpy() == seeds[0].target.to_numpy()).all() for d in seeds), 'the seeds scored other images'
            p = np.mean([d.filter(regex=r'^p\d*$').to_numpy() for d in seeds], 0)
            a = class_scores(np.concatenate([1 - p, p], 1) if p.shape[1] == 1 else p, seeds[0].target.to_numpy())
            kind = 'transductive (unlabeled test images in pretraining)' if 'transductive' in variant else 'inductive'
            res.add(dict(study=study, kind=kind, variant=variant, seeds=','.join(str(d.seed.iloc[0]) for d in seeds), **{c: a.get(c[5:]) for c in cols}))
    table = res.df.set_index(['study', 'kind', 'variant', 'seeds']).round(4)
    print(res.write("Self-supervised pretraining: the final seeds' classifiers averaged",
                    "For each final study and classifier, the test probabilities of its seeds averaged image by image and scored at the "
                    "argmax (the protocol's amendment of 2026-12-08): reported, never chosen. The seeds' models were trained on different "
                    "validation splits, so no validation score is given. Recomputed from the published `*_probs.csv.gz`; no training.", table))

@call_parse
def main(stage:str='study', # 'pretrain' (train the snapshots), 'study' (classifiers and probes over seeds) or 'average' (the seeds averaged)
         name:str='pretrain_dev_cpu64', # Results file name under bench/results (study)
         size:int=64, # Image side in pixels, of the pretraining and of the classifiers
         epochs:int=120, # Pretraining epochs (stage pretrain)
         every:int=5, # Snapshot every this many epochs (stage pretrain)
         snapshots:str='10,30,60,120', # Pretraining epochs whose body is fine-tuned and probed (stage study)
         finetune:str=None, # The snapshots fine-tuned, if not all of `snapshots` (the others are only probed)
         epochs_clf:int=5, # Classifier epochs (the shift study's length at 64 px)
         seeds:str='0,1,2', # Comma-separated seeds of the classifiers (split, weights, shuffling)
         pretrain_seed:int=0, # Seed of the pretraining
         transductive:bool=False, # Pretrain on the test images too (unlabeled); rows marked transductive
         task:str='binary', # 'binary' or 'multiclass' (normal / bacterial / viral, scored at the argmax)
         scratch:bool=True, # Also train the from-scratch reference
         balance:str=None, # Class balancing of the classifiers (`TrainSettings.balance`); the default recipe's by default
         probes:bool=True, # Also probe the bodies (kNN, linear probe); they do not depend on `balance`
         body_dir:str=None, # Take the snapshots from this cache folder of an earlier pretraining with the same settings and images (the data's files re-dated since, which changes the cache key)
         append:bool=False, # Keep the rows (and probabilities) of NAME from earlier calls: a study run seed by seed
         averaged:str='pretrain_final_cpu64,pretrain_plain_final_cpu64,pretrain_final_cpu128,pretrain_plain_final_cpu128,pretrain_len_final_cpu128,pretrain_multi_final_cpu64', # Results whose classifiers' seeds are averaged (stage average)
         data:str=None, # Data folder; $XRAY_DATA by default
        ):
    "Pretrain, or train and probe the classifiers over seeds, and write the table"
    defaults.callbacks = [c for c in defaults.callbacks if c is not ProgressCallback]  # a log file, not a terminal
    ps = PretrainSettings(size=size, seed=pretrain_seed, include_test=transductive)
    if stage == 'average': return average_seeds(name, averaged.split(','))
    data = xray_items(xray_source(data))  # once: every image is decoded to check it
    if stage == 'pretrain':
        start = time.perf_counter()
        folder = pretrain_body(data, replace(ps, epochs=epochs), every=every, progress=False)
        cfg = read_body_config(folder)[1]
        w = ResultsWriter(f"pretrain_history_cpu{size}{'_transductive' if transductive else ''}", Path(__file__).parent/'results')
        w.add(cfg['history'])
        print(w.write("SimSiam pretraining: loss, projection spread and cost per epoch",
                      f"Settings: {ps.key()}; {cfg['data']['n_images']} images. Cost so far: {epochs} epochs, {cfg['train_s']/60:.1f} min wall, "
                      f"{cfg['cpu_s']/60:.1f} min CPU of the main process ({time.perf_counter()-start:.0f} s in this call; "
                      "earlier epochs came from the cache)."))
        return
    kind = 'transductive (unlabeled test images in pretraining)' if transductive else 'inductive'
    tag = ', transductive' if transductive else ''
    out = Path(__file__).parent/'results'
    res, probs = ResultsWriter(name, out), []
    if append and (out/f'{name}.csv').exists():
        res.rows, probs = pd.read_csv(out/f'{name}.csv').to_dict('records'), [pd.read_csv(out/f'{name}_probs.csv.gz')]
    snaps = [int(e) for e in snapshots.split(',')]
    tuned = snaps if finetune is None else [int(e) for e in finetune.split(',')]
    bodies = {e: snapshot(data, replace(ps, epochs=e), body_dir) for e in snaps}  # cached by the pretrain stage
    costs = {e: read_body_config(f)[1] for e, f in bodies.items()}
    balance = balance or DEFAULTS.balance  # the default recipe: class-weighted for two classes
    base = dict(source=data, task=task, size=size, epochs=epochs_clf, balance=balance)
    def keep(variant, seed, valid, test, **extra):
        r = dict(variant=variant, seed=seed, kind=kind if 'SimSiam' in variant else 'inductive', balance=balance,
                 **scores(valid, test),
                 valid_accuracy=float((valid[0].argmax(1) == valid[1]).mean()), **extra)
        res.add(r)  # a stopped run keeps its rows
        for split, (p, t) in (('valid', valid), ('test', test)):
            ps = dict(p=p[:, 1]) if p.shape[1] == 2 else {f'p{i}': p[:, i] for i in range(p.shape[1])}
            probs.append(pd.DataFrame(dict(variant=variant, seed=seed, split=split, target=t, **ps)))
        print(f"{variant} seed {seed}: test accuracy {r['test_accuracy']:.3f}, AUC {r['test_roc_auc']:.3f}, "
              f"valid AUC {r['valid_roc_auc']:.3f}", flush=True)
    for seed in [int(s) for s in seeds.split(',')]:
        if scratch:
            learn, rec = train_classifier(seed=seed, **base)
            keep('scratch', seed, preds(learn, learn.dls.valid), preds(learn, learn.dls.test_split_dl()), train_s=rec['train_s'])
        if scratch and probes:
            knn_sup = 'kNN (supervised body of scratch)'
            keep(knn_sup, seed, *probe_rows(learn, None, 'supervised body of scratch')[knn_sup])
            blank = protocol_learner(data, TrainSettings(task=task, size=size, seed=seed))
            for v, (va, te) in probe_rows(blank, None, 'untrained body').items(): keep(v, seed, va, te)
        for e in snaps:
            if probes:
                probe = protocol_learner(data, TrainSettings(task=task, size=size, seed=seed))
                for v, (va, te) in probe_rows(probe, bodies[e], f'SimSiam {e} ep, label-free{tag}').items():
                    keep(v, seed, va, te, pretrain_epochs=e)
            if e not in tuned: continue
            learn, rec = train_classifier(seed=seed, pretrained_body=bodies[e], **base)
            keep(f'SimSiam {e} ep + fine-tuning{tag}', seed, preds(learn, learn.dls.valid), preds(learn, learn.dls.test_split_dl()),
                 train_s=rec['train_s'], pretrain_epochs=e, pretrain_cpu_s=costs[e]['cpu_s'], pretrain_wall_s=costs[e]['train_s'])
        pd.concat(probs, ignore_index=True).to_csv(out/f'{name}_probs.csv.gz', index=False, float_format='%.5f')
    df = res.df
    table = mean_std(df, [c for c in COLS if c in df], by=['kind', 'variant'])
    cost = '; '.join(f"{e} epochs: {c['cpu_s']/60:.1f} min CPU ({c['train_s']/60:.1f} min wall)" for e, c in costs.items())
    weighting = 'class-weighted for two classes' if balance == 'auto' else f"classes balanced '{balance}'" + (' (plain)' if balance == 'none' else '')
    about = (f"Classifiers ({task}): the default recipe (vgg 16-128, {weighting}, the report's augmentation, patient split, lr {DEFAULTS.lr}, "
             f"bs {DEFAULTS.bs}) at {size} px for {epochs_clf} epochs; seeds {seeds}. Pretraining: SimSiam ({ps.key()}), "
             f"{'fitting and unlabeled test images' if transductive else 'fitting images only (train and val folders), no labels'}; "
             f"cost {cost}. kNN and linear probes: frozen body, pooled features; every choice on validation. "
             "`test_thr_*` at each model's validation threshold, `test_*` at the argmax."
             + (" Rows of earlier calls (`--append`, other seeds) are kept; the command is the last call's." if append else ""))
    print(res.write(f"Self-supervised pretraining ({name})", about, table))
