"""Benchmark step: the protocol's two rules applied to a lever study of `bench/shift.py` (validation scores only).

Rule A (`choose_lever` on the mean validation AUC) reads NAME.csv; rule C chooses on the validation balanced accuracy at the argmax. Rule B weights each validation image by how
test-like it looks to the label-free domain classifier (`domain_classifier` + `importance_weights`: the unlabeled
test images are read, their labels never) and chooses on the weighted validation accuracy at the argmax, read from
NAME_probs.csv.gz. Each seed's validation images are found again by rebuilding that seed's patient split. Writes
NAME_choice.csv (one row per lever and seed: plain and weighted validation accuracy, with the test accuracy for the
record) and NAME_choice.md (both choices; how well each validation score ranks the levers' test accuracy, after the
fact). Example:

    XRAY_DATA=../shared/data/chest_xray python bench/shift_choice.py --name shift_multi_cpu64 --task multiclass
"""
from pathlib import Path
import numpy as np, pandas as pd
from fastcore.script import call_parse
from xray_fastai.images import xray_source; from xray_fastai.items import xray_items; from xray_fastai.data import xray_dataloaders
from xray_fastai.experiments import ResultsWriter
from xray_fastai.evaluate import balanced_accuracy
from xray_fastai.shift import LEVERS, domain_classifier, importance_weights, choose_lever

@call_parse
def main(name:str='shift_levers_cpu64', # A study of bench/shift.py under bench/results
         task:str='binary', # The study's task
         size:int=64, # The study's image side (only to rebuild the split's loaders from the cache)
         valid_pct:float=0.2, # The study's validation share
         data:str=None, # Data folder; $XRAY_DATA by default
        ):
    "Apply the shift protocol's rules A and B to the study NAME"
    out = Path(__file__).parent/'results'
    writer = ResultsWriter(f'{name}_choice', out)
    runs, probs = pd.read_csv(out/f'{name}.csv'), pd.read_csv(out/f'{name}_probs.csv.gz')
    items = xray_items(xray_source(data))
    dc = domain_classifier(items)
    w = pd.Series(importance_weights(dc['score'], (items['split'] != 'test').values), index=items['path'].values)
    valid = probs[probs.split == 'valid']
    pcols = ['p'] if 'p' in valid else sorted(c for c in valid if c.startswith('p') and c[1:].isdigit())
    rows = []
    for seed, g in valid.groupby('seed'):
        dls = xray_dataloaders(items, task=task, size=size, split='patient', valid_pct=valid_pct, seed=int(seed), bs=64)
        paths, targets = dls.valid.items['path'].values, np.array([dls.vocab.o2i[o] for o in dls.valid.items[task]])
        for variant, v in g.groupby('variant', sort=False):
            if len(v) != len(paths) or not (v.target.values == targets).all():
                raise ValueError(f"{variant} seed {seed}: its validation rows are not the rebuilt split's")
            p = v[pcols].to_numpy()
            pred = (p[:, 0] >= 0.5).astype(int) if pcols == ['p'] else p.argmax(1)
            ok = pred == targets
            rows.append(dict(variant=variant, seed=int(seed), valid_accuracy=ok.mean(),
                             valid_balanced_accuracy=balanced_accuracy(pred, targets),
                             valid_weighted_accuracy=np.average(ok, weights=w[paths].values)))
    ch = writer.add(pd.DataFrame(rows).merge(runs[['variant', 'seed', 'kind', 'valid_roc_auc', 'test_accuracy']], on=['variant', 'seed']))
    a, b, c = (choose_lever(ch, score=k) for k in ('valid_roc_auc', 'valid_weighted_accuracy', 'valid_balanced_accuracy'))
    ind = ch[(ch.kind == 'inductive') & ch.variant.isin(LEVERS)].groupby('variant')[['valid_roc_auc', 'valid_accuracy', 'valid_weighted_accuracy', 'valid_balanced_accuracy', 'test_accuracy']].mean()
    rho = ind.corr(method='spearman')['test_accuracy'].drop('test_accuracy')
    print(writer.write(f"Shift protocol's choices for {name}", f"Rule A (mean validation AUC): **{a}**. Rule B (importance-weighted "
                       f"validation accuracy; weights from the label-free domain classifier, AUC {dc['auc']:.3f}): **{b}**. Rule C (mean "
                       f"validation balanced accuracy at the argmax): **{c}**.\n\nAfter the fact, Spearman correlation over the inductive "
                       "levers between each validation score and test accuracy: " + ', '.join(f"{k} {v:+.2f}" for k, v in rho.items()) + ".",
                       ind.round(4).sort_values('valid_weighted_accuracy', ascending=False)))
