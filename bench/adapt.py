"""Site adaptation of batch-norm statistics (`adapt.adapted`) against no adaptation, on the Kermany test folder.

Models: saved model folders trained with the main job's recipe, e.g.
    xray-fastai train --data $XRAY_DATA --balance weighted --seed S --out /tmp/adapt-models/sS
For each guard setting (prior strength, adapted layers) and each sample of test images (the whole folder, its
NORMAL-only and PNEUMONIA-only halves, random subsets of 16/32/64/128 images, 5 draws each) the model is adapted on the
sample's images and scores that same sample at its saved validation threshold. Every adapted row is transductive, and
the guard is chosen on these test images (there is no other shifted set to choose it on).

    python bench/adapt.py --models /tmp/adapt-models/s0 /tmp/adapt-models/s1 --name adapt_cpu

The rule for choosing the guard and the minimum, written before the first run (means over the models):
1. A setting is acceptable when its accuracy on each one-class half (NORMAL only, PNEUMONIA only) is at most
   2 points below no adaptation.
2. Among acceptable settings, the largest accuracy gain on the whole folder; within 0.5 point, the one that loses
   least on the one-class halves.
3. If none is acceptable: the best setting on the whole folder plus a refusal when the unadapted model's predicted
   PNEUMONIA share of the sample is extreme, with bounds between the whole folder's share and the one-class halves'
   shares, and only if such bounds separate them for every model.
4. The minimum number of images: the smallest subset size (16/32/64/128) from which on (that size and every larger
   one) the chosen setting's mean accuracy over models and draws is not below no adaptation.
"""
import argparse, os, time
from pathlib import Path
import numpy as np, pandas as pd, torch
from xray_fastai.data import xray_cache
from xray_fastai.predict import load_model, image_files
from xray_fastai.experiments import ResultsWriter
from xray_fastai.adapt import adapted, adapt_bn

SETTINGS = {  # name -> (prior, layers); None: no adaptation; 'onepass': the study's `adapt_bn` at batch size 64
    'none': None, 'adapt_bn one pass (bs 64)': 'onepass',
    'exact, prior 0': (0, None), 'exact, prior 16': (16, None), 'exact, prior 64': (64, None), 'exact, prior 256': (256, None),
    'exact, first 4 layers': (0, 4), 'exact, first 4 layers, prior 64': (64, 4),
}

def scores(pred, probs, y) -> dict:
    "Accuracy, sensitivity and specificity at the model's threshold; the share predicted PNEUMONIA"
    p = np.array([pred.vocab.index(l) for l in pred.decide(probs)])
    pos, neg = y == 1, y == 0
    return dict(accuracy=(p == y).mean(), sensitivity=(p[pos] == 1).mean() if pos.any() else np.nan,
                specificity=(p[neg] == 0).mean() if neg.any() else np.nan, pred_pneumonia=(p == 1).mean())

def onepass(pred, imgs):
    "The study's `adapt_bn`: one pass in training mode, cumulative average over batches of 64"
    from copy import deepcopy
    from xray_fastai.predict import XrayPredictor
    m = deepcopy(pred.model)
    x = pred.preprocess(imgs)
    adapt_bn(m, [(x[i:i+64],) for i in range(0, len(x), 64)])
    return XrayPredictor(m.eval(), pred.vocab, pred.size, pred.stats, pred.threshold, pred.task, pred.config, device='cpu')

def choose(df:pd.DataFrame, sizes:list) -> str:
    "The rule of the docstring applied to the rows: the chosen setting and the minimum, with the reasons"
    acc = df.groupby(['sample', 'setting'])['accuracy'].mean()
    d = lambda sample, s: acc[(sample, s)] - acc[(sample, 'none')]
    cands = [s for s in SETTINGS if SETTINGS[s] not in (None, 'onepass')]
    lines, ok = [], [s for s in cands if min(d('NORMAL only', s), d('PNEUMONIA only', s)) >= -0.02]
    for s in cands: lines.append(f"{s}: whole {d('whole', s):+.3f}, NORMAL only {d('NORMAL only', s):+.3f}, "
                                 f"PNEUMONIA only {d('PNEUMONIA only', s):+.3f}" + (' (acceptable)' if s in ok else ''))
    if not ok: return '\n'.join(lines + ['No setting is acceptable (rule 3 applies).'])
    best = max(d('whole', s) for s in ok)
    near = [s for s in ok if d('whole', s) >= best - 0.005]
    pick = max(near, key=lambda s: min(d('NORMAL only', s), d('PNEUMONIA only', s)))
    mins = [n for i, n in enumerate(sizes) if all(d(f'random {m}', pick) >= 0 for m in sizes[i:])]
    lines += [f"Chosen: {pick}.", f"Random subsets, accuracy vs none: " + ', '.join(f"{n}: {d(f'random {n}', pick):+.3f}" for n in sizes),
              f"Minimum: {mins[0] if mins else 'none of the sizes'}."]
    return '\n'.join(lines)

def guarded(df:pd.DataFrame, setting:str, bounds:tuple) -> pd.DataFrame:
    "Rule 3: `setting` refusing (no adaptation) where the unadapted predicted PNEUMONIA share is outside `bounds`"
    key = ['model', 'sample', 'draw']
    none, a = df[df.setting == 'none'].set_index(key), df[df.setting == setting].set_index(key)
    refused = (a.unadapted_pred_pneumonia < bounds[0]) | (a.unadapted_pred_pneumonia > bounds[1])
    acc = a.accuracy.where(~refused, none.accuracy)
    g = lambda s: s.groupby('sample', sort=False).mean()
    return pd.DataFrame({'refused': g(refused.astype(float)), 'accuracy none': g(none.accuracy), f'accuracy {setting}': g(a.accuracy),
                         'accuracy guarded': g(acc), 'guarded vs none': g(acc - none.accuracy)})

def choose_guard(csv:str):
    "Rules 3 and 4 on a finished run's rows: the best whole-folder setting, refusal bounds between the shares, the minimum"
    df = pd.read_csv(csv)
    acc = df.groupby(['sample', 'setting'])['accuracy'].mean()
    d = lambda sample, s: acc[(sample, s)] - acc[(sample, 'none')]
    cands = [s for s in SETTINGS if SETTINGS[s] not in (None, 'onepass')]
    best = max(d('whole', s) for s in cands)
    pick = max([s for s in cands if d('whole', s) >= best - 0.005], key=lambda s: min(d('NORMAL only', s), d('PNEUMONIA only', s)))
    share = df[df.setting == 'none'].set_index(['model', 'sample']).unadapted_pred_pneumonia
    w, a, b = (share.xs(k, level='sample') for k in ('whole', 'NORMAL only', 'PNEUMONIA only'))
    if not (a.max() < w.min() and w.max() < b.min()): print("no bounds separate the whole folder from the one-class halves"); return
    bounds = (float(round((a.max() + w.min()) / 2, 1)), float(round((w.max() + b.min()) / 2, 1)))  # midway, to one decimal
    t = guarded(df, pick, bounds)
    sizes = [int(s.split()[1]) for s in t.index if s.startswith('random')]
    mins = [n for i, n in enumerate(sizes) if all(t.loc[f'random {m}', 'guarded vs none'] >= 0 for m in sizes[i:])]
    w_ = ResultsWriter(Path(csv).stem + '_choice', Path(csv).parent)
    w_.add(t.reset_index())
    w_.write('Site adaptation: the guard chosen by rules 3 and 4 (on test images)',
             f"From {csv}. Rule 3: best whole-folder setting {pick!r}; predicted PNEUMONIA share (unadapted model, at its "
             f"threshold) whole {w.round(3).tolist()}, NORMAL only {a.round(3).tolist()}, PNEUMONIA only {b.round(3).tolist()} "
             f"per model: refusal outside {bounds} (midway, one decimal). Rule 4: minimum {mins[0] if mins else 'none'} images. "
             "Chosen on the test images; every adapted row is transductive.", t.round(3))
    print(t.round(3).to_string(), f"\nsetting {pick}, bounds {bounds}, minimum {mins[0] if mins else None}")

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', nargs='+')
    ap.add_argument('--data', default=os.environ.get('XRAY_DATA'))
    ap.add_argument('--draws', type=int, default=5)
    ap.add_argument('--sizes', type=int, nargs='+', default=[16, 32, 64, 128])
    ap.add_argument('--name', default='adapt_cpu')
    ap.add_argument('--choose', help="apply rules 3 and 4 to this finished run's CSV (writes NAME_choice.csv|md) and stop")
    a = ap.parse_args()
    if a.choose: return choose_guard(a.choose)
    start, w = time.perf_counter(), ResultsWriter(a.name, Path(__file__).parent/'results')
    files = image_files(Path(a.data)/'test')
    y = np.array([int(f.parent.name == 'PNEUMONIA') for f in files])
    rng = np.random.default_rng(0)
    samples = [('whole', len(y), 0, np.arange(len(y))), ('NORMAL only', int((y == 0).sum()), 0, np.flatnonzero(y == 0)),
               ('PNEUMONIA only', int((y == 1).sum()), 0, np.flatnonzero(y == 1))]
    samples += [(f'random {n}', n, d, rng.choice(len(y), n, replace=False)) for n in a.sizes for d in range(a.draws)]
    for mdir in a.models:
        pred = load_model(mdir, device='cpu')
        imgs = xray_cache(files, pred.size, progress=False)[:, 0].numpy()
        base = pred.probs(imgs)
        for kind, n, draw, idx in samples:
            for name, s in SETTINGS.items():
                if s is None: probs = base[idx]
                else:
                    p = onepass(pred, imgs[idx]) if s == 'onepass' else adapted(pred, imgs[idx], prior=s[0], layers=s[1], min_images=1)
                    probs = p.probs(imgs[idx])
                w.add(dict(model=Path(mdir).name, sample=kind, n=n, draw=draw, setting=name, **scores(pred, probs, y[idx]),
                           unadapted_pred_pneumonia=scores(pred, base[idx], y[idx])['pred_pneumonia']))
        print(f"{mdir}: done, {time.perf_counter() - start:.0f} s")
    df = w.df
    t = df.groupby(['sample', 'setting'], sort=False)[['accuracy', 'sensitivity', 'specificity', 'pred_pneumonia']].mean()
    none = t.xs('none', level='setting')
    t['accuracy vs none'] = t['accuracy'] - none['accuracy'].reindex(t.index.get_level_values('sample')).values
    sd = df.groupby(['sample', 'setting'], sort=False)['accuracy'].std(ddof=1)
    t.insert(1, 'accuracy sd', sd)
    w.write('Site adaptation of batch-norm statistics on the test folder (transductive)',
            f"Models: {', '.join(a.models)} (the main job's recipe, --balance weighted, 128 px, 8 epochs). Each sample of test "
            "images adapts the model and is then scored at the model's validation threshold. Means over the models (and the "
            f"{a.draws} random draws of each subset size); sd over models and draws. Every adapted row is transductive; the guard "
            "is chosen on these test images.", {'mean over models and draws': t.round(3), 'the rule applied': choose(df, a.sizes)})
    print(t.round(3).to_string()); print(choose(df, a.sizes))

if __name__ == '__main__': main()
