"""The five tasks on one GPU, end to end, timed: binary and 3-class classifiers, embeddings (kNN + t-SNE), anomaly
detection, Grad-CAM.

Not a test. Real data at 224 px with mixed precision (`Learner.to_fast_precision`: bf16 where the GPU has it) and the
decoded images cached in GPU memory, so batches are gathered and augmented on the GPU. Sized to finish in about
8 minutes on one H100/H200; it reports the binary classifier's time to reach `--target` validation accuracy and
writes results.json and results.md (device, command, timings, scores) plus each task's figures into `--out`:

    XRAY_DATA=/path/to/chest_xray python bench/gpu_pipeline.py --out $OUT
    python bench/gpu_pipeline.py --device cpu --size 64 --quick --out /tmp/gpu-smoke   # a smoke test on a CPU
"""
import json, shlex, sys, time
from pathlib import Path
import numpy as np, pandas as pd, torch, matplotlib
matplotlib.use('agg')
import matplotlib.pyplot as plt
from fastcore.script import call_parse
from fastai.basics import *
from xray_fastai.core import TrainSettings
from xray_fastai.data import cache_on_device, xray_dataloaders, xray_items, xray_source
from xray_fastai.learner import model_record
from xray_fastai.experiments import protocol_learner, fit_and_evaluate, hardware
from xray_fastai.embeddings import get_embeddings, fit_knn, knn_vs_head, embedding_map, plot_map
from xray_fastai.explain import GradCAM, cam_grid

class EpochClock(Callback):
    "Seconds from the start of `fit` to the end of each epoch"
    order = Recorder.order + 1  # after the recorder has the epoch's metrics
    def before_fit(self): self.start, self.seconds = time.perf_counter(), []
    def after_epoch(self):
        if self.dls.device.type == 'cuda': torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self.start)

def time_to(log:pd.DataFrame, seconds:list, metric:str, target:float) -> float|None:
    "Training seconds until validation `metric` first reached `target`; None if it never did"
    hit = np.flatnonzero(log[metric].to_numpy() >= target)
    return round(seconds[hit[0]], 1) if len(hit) else None

def classifier(items, task, out, args) -> tuple:
    "Train and evaluate a classifier; its learner and a record of timing and scores"
    start = time.perf_counter()
    s = TrainSettings(task=task, arch=args.arch, size=args.size, epochs=args.epochs, lr=args.lr, bs=args.bs, aug='report', seed=0)
    learn = protocol_learner(items, s, num_workers=0, device=args.device)
    dls = cache_on_device(learn.dls)
    clock = EpochClock(); learn.add_cb(clock)
    with learn.no_bar(): rec = fit_and_evaluate(learn, s.epochs, s.lr, s.schedule, s.threshold, s.sensitivity, folder=out/task)
    learn.remove_cb(clock)
    log = model_record(learn).training_log.assign(seconds=np.round(clock.seconds, 1))
    log.to_csv(out/task/'training_log.csv', index=False)
    res = dict(train_s=round(rec['train_s'], 1), total_s=round(time.perf_counter()-start, 1), epochs=args.epochs,
               images_per_s=round(len(dls.train.items)*args.epochs/rec['train_s'], 1),
               **{k: round(v, 4) for k, v in rec.items() if k.startswith('test_') or k in ('valid_accuracy', 'valid_roc_auc')})
    if task == 'binary':
        res[f'seconds_to_valid_accuracy_{args.target}'] = time_to(log, clock.seconds, 'accuracy', args.target)
        res['best_valid_accuracy'] = round(float(log['accuracy'].max()), 4)
    return learn, res

def embeddings_task(learn, out) -> dict:
    "kNN on the binary classifier's embeddings against its head, and a t-SNE map of the test images"
    start = time.perf_counter()
    train, valid, test = (get_embeddings(learn, s, cache=False, progress=False) for s in ('train', 'valid', 'test'))
    knn, _ = fit_knn(train, valid)
    scores, _ = knn_vs_head(learn, knn, test)
    xy = embedding_map(test.x)
    ax = plot_map(xy, test.y, test.vocab, title='t-SNE of the test embeddings')
    ax.figure.savefig(out/'embeddings_tsne.png', dpi=100); plt.close('all')
    return dict(seconds=round(time.perf_counter()-start, 1), **{f'{n} {c}': round(float(v), 4) for n, r in scores.iterrows()
                                                                for c, v in r.items() if c in ('accuracy', 'roc_auc')})

def anomaly_task(items, out, args) -> dict:
    "Trained on NORMAL images only: an autoencoder (reconstruction error) and the synthetic-opacity model (feature density)"
    from xray_fastai import anomaly
    start = time.perf_counter()
    dls = cache_on_device(xray_dataloaders(items, task='normal_only', size=args.size, bs=args.bs, aug='light', num_workers=0,
                                           device=args.device))
    scores = {}
    for name, make, score in (('autoencoder mse', anomaly.autoencoder_learner, anomaly.ReconstructionScore),
                              ('opacity embedding density', anomaly.opacity_learner, lambda m: anomaly.FeatureDensity(m).fit(dls))):
        set_seed(0)
        learn = make(dls)
        with learn.no_bar(): anomaly.fit_timed(learn, args.epochs, args.lr)  # one-cycle, then back to float32
        scores[name] = score(learn.model)
    table, _ = anomaly.anomaly_results(scores, dls)
    res = {r['variant']: {k: round(r[f'test_{k}'], 4) for k in ('auroc', 'auprc', 'accuracy', 'sensitivity', 'specificity')}
           for r in table.to_dict('records')}
    return dict(seconds=round(time.perf_counter()-start, 1), **res)

def gradcam_task(learn, out, n:int=8) -> dict:
    "Grad-CAM maps of a batch of test images"
    start = time.perf_counter()
    items = learn.dls.items
    rows = items[items['split'] == 'test'].groupby('binary').head(n//2)  # both classes
    x, y = (t.as_subclass(Tensor) for t in learn.dls.test_dl(rows, with_labels=True, bs=n).one_batch())  # `cam_grid` formats plain tensors
    with GradCAM(learn.model) as cam: fig = cam_grid(cam, x, y, learn.dls.vocab)
    if x.device.type == 'cuda': torch.cuda.synchronize()
    fig.savefig(out/'gradcam.png', dpi=80); plt.close('all')
    return dict(seconds=round(time.perf_counter()-start, 2), images=len(x))

def quick_items(source, n:int=40) -> pd.DataFrame:
    "At most `n` images of each class in each split, for a smoke test"
    return xray_items(source).groupby(['split', 'binary'], group_keys=False).head(n).reset_index(drop=True)

@call_parse
def main(out:str='gpu_results', # Folder for results.json, results.md and the figures
         data:str=None, # Data folder; $XRAY_DATA, else the built-in phantoms
         size:int=224, # Image side in pixels
         epochs:int=20, # Epochs of each classifier and of the autoencoder
         bs:int=64, # Batch size
         lr:float=2e-3, # Peak learning rate
         arch:str='vgg', # Classifier architecture
         target:float=0.92, # Validation accuracy whose time-to-reach is reported for the binary task
         device:str=None, # 'cuda' or 'cpu'; the GPU when there is one
         quick:bool=False, # Smoke test: 40 images per class and split, 1 epoch, batches of at most 16
        ):
    "The binary, multiclass, embeddings, anomaly and Grad-CAM tasks on one device, timed"
    start = time.perf_counter()
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    args = AttrDict(size=size, epochs=1 if quick else epochs, bs=min(bs, 16) if quick else bs, lr=lr, arch=arch, target=target, device=device)
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    source = xray_source(data)
    items = quick_items(source) if quick else xray_items(source)
    res = dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else hardware(), hardware=hardware(),
               command='python bench/gpu_pipeline.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:]),
               data=str(source), images=len(items), size=size, bs=args.bs, arch=arch, epochs=args.epochs, mixed_precision=True)
    def record(name, value):
        res[name] = value
        print(f"{name}: {value}", flush=True)
        (out/'results.json').write_text(json.dumps(res, indent=2, default=str))  # what finished survives a time-out
    learn, rec = classifier(items, 'binary', out, args); record('binary', rec)
    record('multiclass', classifier(items, 'multiclass', out, args)[1])
    record('embeddings', embeddings_task(learn, out))
    record('anomaly', anomaly_task(items, out, args))
    record('gradcam', gradcam_task(learn, out))
    res['total_s'] = round(time.perf_counter() - start, 1)
    (out/'results.json').write_text(json.dumps(res, indent=2, default=str))
    md = [f"# Five tasks on {res['device']}\n", f"Command: `{res['command']}`\n", f"Hardware: {res['hardware']}\n",
          f"Data: {res['data']} ({res['images']} images), {size} px, bs {args.bs}, {arch}, {args.epochs} epoch(s) per model, "
          f"mixed precision, images cached on {device.type}. Total {res['total_s']} s.\n"]
    for k in ('binary', 'multiclass', 'embeddings', 'anomaly', 'gradcam'):
        md.append(f"## {k}\n\n" + '\n'.join(f"- {n}: {v}" for n, v in res[k].items()) + '\n')
    (out/'results.md').write_text('\n'.join(md))
    print('\n'.join(md))
