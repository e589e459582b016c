"""Benchmark: kNN on a classifier's embeddings against the classifier's own head, over seeds, on real data.

Not a test: it trains two classifiers per seed (binary and 3-class) for minutes each. For every model it extracts
the fitting, validation and test embeddings, fits kNN votes whose settings are chosen on the validation embeddings
only, and scores the head and each vote on the same test images at the argmax. Results go to bench/results/NAME.csv
(one row per seed and task) and NAME.md (mean ± std, the command, the hardware, the wall time). Example:

    XRAY_DATA=../shared/data/chest_xray python bench/embeddings.py --name embeddings_cpu
"""
import shlex, sys, time
from pathlib import Path
import numpy as np, pandas as pd, sklearn.metrics as skm
from fastcore.basics import first
from fastcore.script import call_parse
from fastai.basics import set_seed
from xray_fastai.learner import classifier_learner
from xray_fastai.experiments import train_classifier, mean_std, hardware
from xray_fastai.models import body_stages, embedding_layer
from xray_fastai.embeddings import get_layer_embeddings, augmented_embeddings, choose_knn, crossfit_accuracy, knn_vs_head, split_dl
from xray_fastai.export import save_model, read_config, load_weights

WIDE_KS = (1, 3, 5, 9, 15, 25, 45, 75, 125, 200)
N_VIEWS = 4  # augmented views of each training image in the 'views' memory
# Each kNN procedure: (layers it may use, `fit_knn` settings, memory). Every choice is made on the validation embeddings.
# Memory 'train': the training images once, unaugmented; 'views': `augmented_embeddings`, N_VIEWS augmented views of each.
PROCEDURES = {
    'knn_chapter': (('embedding',), {}, 'train'),  # the chapter's defaults: k up to 45, uniform votes, by balanced accuracy
    'knn_acc': (('embedding',), dict(ks=WIDE_KS, weights=('uniform', 'distance'), by='accuracy'), 'train'),
    'knn_logloss': (('embedding',), dict(ks=WIDE_KS, weights=('uniform', 'distance'), by='log_loss'), 'train'),
    'knn_layer_acc': (('stage3', 'stage4', 'embedding'), dict(ks=WIDE_KS, weights=('uniform', 'distance'), by='accuracy'), 'train'),
    'knn_views': (('embedding',), {}, 'views'),  # the chapter's defaults on the augmented memory
}
SCORES = ('accuracy', 'roc_auc', 'balanced_accuracy', 'f1_macro')

def macro_f1(confusion) -> float:
    "Unweighted mean over classes of F1, from a confusion matrix (rows: true classes)"
    c = np.asarray(confusion, float); tp = np.diag(c)
    return float(np.mean(2*tp / np.maximum(c.sum(0) + c.sum(1), 1)))

def _scores(prefix:str, s:dict) -> dict:
    return {f'{prefix}_{k}': (macro_f1(s['confusion']) if k == 'f1_macro' else s[k]) for k in SCORES}

def evaluate_seed(learn, task:str, seed:int, train_s:float) -> dict:
    "Head and kNN test scores for one trained classifier, and their validation accuracies"
    named = [*body_stages(learn.model)[-2:], ('embedding', embedding_layer(learn.model))]
    embs = {s: dict(zip([n for n, _ in named], get_layer_embeddings(learn, s, [m for _, m in named], progress=False).values()))
            for s in ('train', 'valid', 'test')}
    embs['views'] = {'embedding': first(augmented_embeddings(learn, N_VIEWS, [named[-1][1]], progress=False).values())}
    vprobs, vy = learn.get_preds(dl=split_dl(learn.dls, 'valid'))
    row = dict(task=task, seed=seed, train_s=train_s, head_valid_accuracy=skm.accuracy_score(vy, vprobs.argmax(1)))
    for name, (layers, kw, memory) in PROCEDURES.items():
        kw = {'by': 'balanced_accuracy', **kw, 'memory': memory}
        layer, knn, grid = choose_knn(embs, layers, **kw)
        _, res = knn_vs_head(learn, knn, embs["test"][layer])
        head, vote = res.values()
        if name == 'knn_chapter': row.update(_scores('head', head))
        row.update(_scores(name, vote))
        row.update({f'{name}_gap': row['head_accuracy'] - vote['accuracy'], f'{name}_layer': layer, f'{name}_k': knn.n_neighbors,
                    f'{name}_metric': knn.metric, f'{name}_weights': knn.weights, f'{name}_memory': memory,
                    f'{name}_valid_accuracy': crossfit_accuracy(embs, layers, **kw)})
    return row

def trained(keep:str, data, task:str, arch:str, seed:int, model_kwargs:dict, epochs:int, lr:float, **kwargs) -> tuple:
    "(learner, training seconds, reused): the model saved under `keep` when it is there, else a newly trained (and saved) one"
    folder = Path(keep)/f'{task}_seed{seed}' if keep else None
    if folder and (folder/'config.json').exists():
        set_seed(seed)
        learn = classifier_learner(data, task, arch, seed=seed, learner_kwargs=dict(model_kwargs=model_kwargs), **kwargs)
        cfg = read_config(folder)
        learn.model.load_state_dict(load_weights(folder, cfg).state_dict())
        learn.to_full_precision()  # as `fit_and_evaluate` leaves a trained learner
        return learn, cfg['training'].get('train_s', float('nan')), True
    learn, rec = train_classifier(data, task, arch, epochs=epochs, lr=lr, seed=seed,
                                  learner_kwargs=dict(model_kwargs=model_kwargs), **kwargs)
    if folder: save_model(learn, folder, model_kwargs, training=dict(train_s=rec['train_s']))
    return learn, rec['train_s'], False

def long_table(df:pd.DataFrame) -> pd.DataFrame:
    "One row per task, seed and classifier (the head or a kNN procedure)"
    rows = []
    for r in df.to_dict('records'):
        for clf in ('head', *PROCEDURES):
            rows.append(dict(task=r['task'], seed=r['seed'], classifier=clf, **{s: r[f'{clf}_{s}'] for s in SCORES},
                             gap_points=100*r.get(f'{clf}_gap', 0.), valid_accuracy=r[f'{clf}_valid_accuracy']))
    return pd.DataFrame(rows)

@call_parse
def main(name:str='embeddings_cpu', # Results file name under bench/results
         tasks:str='binary,multiclass', # Comma-separated tasks
         arch:str='vgg', # Model architecture
         size:int=96, # Image side in pixels
         epochs:int=3, # Epochs per model
         lr:float=2e-3, # Peak learning rate
         bs:int=64, # Batch size
         aug:str='light', # Augmentation preset
         widths:str='16,32,64,128', # VGG stage widths (comma-separated); ignored by other architectures
         seeds:str='0,1,2', # Comma-separated seeds
         data:str=None, # Data folder; $XRAY_DATA by default
         keep:str=None, # Save each model here (`save_model`, a folder per task and seed); a model already there is reused, not retrained
        ):
    "Train a classifier per task and seed; compare kNN votes on its embeddings (chosen on validation) with its head on test"
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    seeds = [int(s) for s in seeds.split(',')]
    start = time.perf_counter()
    model_kwargs = dict(widths=tuple(int(w) for w in widths.split(','))) if arch == 'vgg' else {}
    rows = []
    for seed in seeds:
        for task in tasks.split(','):
            learn, train_s, reused = trained(keep, data, task, arch, seed, model_kwargs, epochs, lr, size=size, bs=bs, aug=aug)
            rows.append({**evaluate_seed(learn, task, seed, train_s), 'reused': reused})
            pd.DataFrame(rows).to_csv(out/f'{name}.csv', index=False)  # after every model: a stopped run keeps its rows
            print(f"{task} seed {seed}: head {rows[-1]['head_accuracy']:.3f}, "
                  + ', '.join(f"{p} {rows[-1][p+'_accuracy']:.3f}" for p in PROCEDURES), flush=True)
    df = pd.DataFrame(rows)
    table = mean_std(long_table(df), list(SCORES) + ['gap_points', 'valid_accuracy'], by=['task', 'classifier'], digits=3)
    chosen = df[['task', 'seed'] + [f'{p}_{c}' for p in PROCEDURES for c in ('layer', 'k', 'metric', 'weights')]]
    cmd = 'python bench/embeddings.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
    md = (f"# {name}\n\n{arch} {model_kwargs}, {size} px, {epochs} epochs, lr {lr}, bs {bs}, aug {aug}; seeds {seeds}; "
          f"tasks {tasks}\n\nHead: the network's own last layer at its argmax. kNN procedures (every setting chosen on the "
          f"validation embeddings, never on test): `knn_chapter` is `fit_knn`'s defaults (k in 1-45, uniform votes, by "
          f"balanced accuracy); `knn_acc` and `knn_logloss` choose k in {WIDE_KS}, euclidean or cosine, uniform or "
          f"distance-weighted votes by validation accuracy or log-loss; `knn_layer_acc` also chooses the layer (stage3, "
          f"stage4 or the embedding) by validation accuracy. These four remember the training images once, unaugmented; "
          f"`knn_views` is `knn_chapter` fitted on {N_VIEWS} augmented views of each training image (`augmented_embeddings`: "
          f"the training transforms the head was fitted under). gap_points: head test accuracy minus kNN test accuracy, in "
          f"points. valid_accuracy: accuracy on the validation split (the head at its argmax; each kNN procedure cross-fitted: "
          f"its choices made on one half of the validation patients and scored on the other, both ways).\n\nHardware: {hardware()}. Total wall time {time.perf_counter()-start:.0f} s "
          f"({'models reused from ' + keep + ', trained in ' if df.reused.all() else 'training '}{df.train_s.sum():.0f} s).\n\n"
          f"Command: `{cmd}`\n\n```\n{table.to_string()}\n```\n\nChosen on validation:\n\n```\n{chosen.to_string(index=False)}\n```\n")
    (out/f'{name}.md').write_text(md)
    print(md)
