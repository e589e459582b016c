"""Benchmark: kNN on a classifier's embeddings against the classifier's own head, over seeds, on real data.

Not a test: it trains two classifiers per seed (binary and 3-class) for minutes each. For every model,
`knn_procedures_vs_head` extracts the fitting, validation and test embeddings, fits the kNN votes of `KNN_PROCEDURES`
(settings chosen on the validation embeddings only), and scores the head and each vote on the same test images at
the argmax. Results go to bench/results/NAME.csv (one row per seed and task) and NAME.md (mean ± std, the command,
the hardware, the wall time). Example:

    XRAY_DATA=../shared/data/chest_xray python bench/embeddings.py --name embeddings_cpu
"""
from pathlib import Path
from fastcore.script import call_parse
from xray_fastai.experiments import ResultsWriter, saved_or_trained, mean_std
from xray_fastai.embeddings import KNN_PROCEDURES, KNN_SCORES, KNN_WIDE_KS, knn_procedures_vs_head, knn_procedures_table

N_VIEWS = 4  # augmented views of each training image in the 'views' memory

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
    w = ResultsWriter(name, Path(__file__).parent/'results')
    seeds = [int(s) for s in seeds.split(',')]
    model_kwargs = dict(widths=tuple(int(w) for w in widths.split(','))) if arch == 'vgg' else {}
    for seed in seeds:
        for task in tasks.split(','):
            learn, train_s, reused = saved_or_trained(keep and Path(keep)/f'{task}_seed{seed}', source=data, task=task, arch=arch,
                                                      seed=seed, epochs=epochs, lr=lr, size=size, bs=bs, aug=aug,
                                                      learner_kwargs=dict(model_kwargs=model_kwargs))
            r = w.add(dict(task=task, seed=seed, train_s=train_s, **knn_procedures_vs_head(learn, n_views=N_VIEWS), reused=reused)).iloc[-1]
            print(f"{task} seed {seed}: head {r.head_accuracy:.3f}, " + ', '.join(f"{p} {r[p+'_accuracy']:.3f}" for p in KNN_PROCEDURES), flush=True)
    df = w.df
    table = mean_std(knn_procedures_table(df), list(KNN_SCORES) + ['gap_points', 'valid_accuracy'], by=['task', 'classifier'], digits=3)
    chosen = df[['task', 'seed'] + [f'{p}_{c}' for p in KNN_PROCEDURES for c in ('layer', 'k', 'metric', 'weights')]]
    print(w.write(name, f"{arch} {model_kwargs}, {size} px, {epochs} epochs, lr {lr}, bs {bs}, aug {aug}; seeds {seeds}; tasks {tasks}\n\n"
          f"Head: the network's own last layer at its argmax. kNN procedures (every setting chosen on the validation embeddings, "
          f"never on test): `knn_chapter` is `fit_knn`'s defaults (k in 1-45, uniform votes, by balanced accuracy); `knn_acc` and "
          f"`knn_logloss` choose k in {KNN_WIDE_KS}, euclidean or cosine, uniform or distance-weighted votes by validation accuracy "
          f"or log-loss; `knn_layer_acc` also chooses the layer (stage3, stage4 or the embedding) by validation accuracy. These "
          f"four remember the training images once, unaugmented; `knn_views` is `knn_chapter` fitted on {N_VIEWS} augmented views "
          f"of each training image (`augmented_embeddings`: the training transforms the head was fitted under). gap_points: head "
          f"test accuracy minus kNN test accuracy, in points. valid_accuracy: accuracy on the validation split (the head at its "
          f"argmax; each kNN procedure cross-fitted: its choices made on one half of the validation patients and scored on the "
          f"other, both ways).\n\n{'Models reused from ' + keep + ', trained in ' if df.reused.all() else 'Training '}"
          f"{df.train_s.sum():.0f} s.", {'': table, 'Chosen on validation': chosen.to_string(index=False)}))
