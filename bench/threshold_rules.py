"""Benchmark: the decision-threshold rules of `pick_threshold` judged on validation only, from stored predictions.

No training. Reads the validation and test probabilities that `bench/shift.py` stored for its lever studies
(NAME_probs.csv.gz) and finds each run's validation patients again by rebuilding that seed's patient split (the
stored targets must match it exactly). For each run and rule: (a) the threshold's std and IQR over bootstrap
resamples of the validation patients; (b) split-half: the threshold chosen on a random half of the validation
patients, accuracy and balanced accuracy on the other half. The protocol (`bench/results/threshold_protocol.md`,
committed before this script was run) picks one rule per recipe; the test scores of every rule come afterwards,
labelled as known and not used to choose. Writes `threshold_rules.csv|md`. Example:

    XRAY_DATA=../shared/data/chest_xray python bench/threshold_rules.py
"""
from pathlib import Path
import numpy as np, pandas as pd
from fastcore.script import call_parse
from xray_fastai.images import xray_source; from xray_fastai.items import xray_items, patient_split
from xray_fastai.experiments import ResultsWriter, mean_std
from xray_fastai.learner import pick_threshold
from xray_fastai.evaluate import per_class_recall, balanced_accuracy

RECIPES = {'base': 'unbalanced', 'weighted': 'class-weighted', 'undersample': 'undersampled'}  # the studies' inductive recipes
CANDIDATES = ('argmax', 'youden', 'plateau', 'bootstrap')  # in the protocol's order of simplicity
RULES = CANDIDATES + ('sensitivity',)  # 'sensitivity' is reported, not a candidate

def scores(thr:float, p:np.ndarray, t:np.ndarray) -> dict:
    "Accuracy, balanced accuracy, sensitivity and specificity of calling PNEUMONIA when p >= thr"
    pred = (p >= thr).astype(int)
    spec, sens = per_class_recall(pred, t, n_classes=2)
    return dict(accuracy=(pred == t).mean(), balanced_accuracy=balanced_accuracy(pred, t), sensitivity=sens, specificity=spec)

class Patients:
    "A run's validation images grouped by patient, for resampling and halving whole patients"
    def __init__(self, groups:np.ndarray):
        codes, _ = pd.factorize(groups)
        self.members = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)]
    def pick(self, which:np.ndarray) -> tuple:
        "Image indices of the patients `which` (repeats allowed) and a group id per draw"
        idx = [self.members[k] for k in which]
        return np.concatenate(idx), np.repeat(np.arange(len(idx)), [len(i) for i in idx])
    def resample(self, rng) -> tuple: return self.pick(rng.integers(len(self.members), size=len(self.members)))
    def halves(self, rng) -> tuple:
        perm = rng.permutation(len(self.members))
        return self.pick(perm[:len(perm) // 2]), self.pick(perm[len(perm) // 2:])[0]

def judge(p:np.ndarray, t:np.ndarray, groups:np.ndarray, p_test:np.ndarray, t_test:np.ndarray, seed:int,
          n_boot:int, n_halves:int) -> list:
    "One row per rule: its validation threshold, bootstrap spread, split-half scores and (retrospective) test scores"
    pats, rng = Patients(groups), np.random.default_rng(seed)
    boots, halves = [pats.resample(rng) for _ in range(n_boot)], [pats.halves(rng) for _ in range(n_halves)]  # shared by every rule
    rows = []
    for rule in RULES:
        thr = pick_threshold(p, t, rule, groups=groups)
        bt = np.array([pick_threshold(p[i], t[i], rule, groups=g) for i, g in boots])
        sh = pd.DataFrame([scores(pick_threshold(p[a], t[a], rule, groups=g), p[b], t[b]) for (a, g), b in halves]).mean()
        test = scores(thr, p_test, t_test)
        rows.append(dict(rule=rule, threshold=thr, boot_std=bt.std(ddof=1), boot_iqr=np.subtract(*np.percentile(bt, [75, 25])),
                         split_accuracy=sh['accuracy'], split_balanced_accuracy=sh['balanced_accuracy'],
                         **{f'test_{k}': test[k] for k in ('accuracy', 'balanced_accuracy', 'specificity', 'sensitivity')}))
    return rows

def choose(df:pd.DataFrame) -> pd.DataFrame:
    "The protocol's decision for one recipe's runs: best split-half balanced accuracy, ties within its std to the smallest IQR"
    g = df[df.rule.isin(CANDIDATES)].groupby('rule')
    d = pd.DataFrame(dict(score=g.split_balanced_accuracy.mean(), std=g.split_balanced_accuracy.std(ddof=1).fillna(0),
                          boot_iqr=g.boot_iqr.mean(), runs=g.size())).reindex(CANDIDATES)
    best = d.score.idxmax()
    d['tied_with_best'] = d.score >= d.score[best] - d['std'][best]
    d['order'] = range(len(d))
    d['chosen'] = d.index == d[d.tied_with_best].sort_values(['boot_iqr', 'order']).index[0]
    return d.drop(columns='order')

@call_parse
def main(studies:str='shift_levers_cpu64,shift_levers_cpu128', # Lever studies of bench/shift.py under bench/results
         seeds:str='0,1,2', # Their seeds to use
         valid_pct:float=0.2, # The studies' validation share
         n_boot:int=200, # Bootstrap resamples of the validation patients (stability)
         n_halves:int=200, # Random halves of the validation patients (split-half)
         data:str=None, # Data folder; $XRAY_DATA by default
         name:str='threshold_rules', # Results file name
        ):
    "Judge `pick_threshold`'s rules on the stored validation predictions of the lever studies"
    out = Path(__file__).parent/'results'
    writer = ResultsWriter(name, out)
    items, rows = xray_items(xray_source(data)).reset_index(drop=True), []
    t_test = (items.binary[items.split == 'test'] == 'PNEUMONIA').astype(int).values
    for study in studies.split(','):
        probs = pd.read_csv(out/f'{study}_probs.csv.gz')
        for seed in map(int, seeds.split(',')):
            split = patient_split(items, valid_pct, seed)
            valid = split[split.is_valid & (split.split != 'test')]  # in the order the run predicted them
            t = (valid.binary == 'PNEUMONIA').astype(int).values
            for recipe in RECIPES:
                run = probs[(probs.variant == recipe) & (probs.seed == seed)]
                if not len(run): continue
                v, te = run[run.split == 'valid'], run[run.split == 'test']
                if len(v) != len(t) or (v.target.values != t).any() or (te.target.values != t_test).any():
                    raise ValueError(f"{study} {recipe} seed {seed}: the stored targets are not the rebuilt split's")
                rows += [dict(study=study, recipe=recipe, seed=seed, n_valid=len(t), n_patients=valid.patient.nunique(), **r)
                         for r in judge(v.p.values, t, valid.patient.values, te.p.values, t_test, seed, n_boot, n_halves)]
                print(f"{study} {recipe} seed {seed}: done", flush=True)
    df = pd.DataFrame(rows)
    decisions = {r: choose(df[df.recipe == r]) for r in RECIPES if r in set(df.recipe)}
    chosen = {r: d.index[d.chosen][0] for r, d in decisions.items()}
    df = writer.add(df.assign(chosen=[chosen[r] == rule for r, rule in zip(df.recipe, df.rule)]))
    by = ['recipe', 'study', 'rule']
    valid_cols = ['threshold', 'boot_std', 'boot_iqr', 'split_accuracy', 'split_balanced_accuracy']
    test_cols = ['test_accuracy', 'test_balanced_accuracy', 'test_specificity', 'test_sensitivity']
    print(writer.write('Threshold rules judged on validation', (
        f"The rules of `pick_threshold` on the stored predictions of {studies} (recipes {', '.join(RECIPES)}; seeds {seeds}); "
        f"{n_boot} bootstrap resamples and {n_halves} random halves of each run's validation patients. Protocol, committed before "
        "this ran: `bench/results/threshold_protocol.md` (the earlier test results were known when the rules were listed). "
        "Chosen, per recipe: " + '; '.join(f"{RECIPES[r]} (`{r}`): **{c}**" for r, c in chosen.items()) + "."),
        {'Validation only, mean ± std over seeds (threshold: chosen on the whole validation split; boot_*: over patient resamples; split_*: chosen on one half, scored on the other)':
             mean_std(df, valid_cols, by, digits=4),
         **{f"Decision, {RECIPES[r]} (`{r}`): score = split-half balanced accuracy, mean and std over the runs; boot_iqr = mean over the runs":
                d.round(4) for r, d in decisions.items()},
         'Test known, not used to choose (retrospective): each rule\'s validation threshold on the same runs\' test probabilities, mean ± std over seeds':
             mean_std(df, test_cols, by, digits=3)}))
