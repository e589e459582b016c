"""Benchmark: Grad-CAM's pointing game on the phantoms over seeds, for one training configuration.

Not a test. Per seed: train the CAM-ready VGG on phantoms, choose Grad-CAM's layer (last convolution or the output
of one of the last three stages) by pointing-game hit rate on the validation phantoms, score the 400 test phantoms.
Writes bench/results/NAME.csv (one row per seed) and NAME.md (mean ± std, the command, the hardware). Example (the
explain chapter's configuration):

    python bench/explain.py --name explain_phantoms_cpu --epochs 12 --n-train 1500
"""
import shlex, sys, time
from pathlib import Path
import numpy as np, pandas as pd, torch
from torch import Tensor
from fastcore.script import call_parse
from xray_fastai.phantoms import phantom_data, lesion_mask
from xray_fastai.learner import classifier_learner
from xray_fastai.explain import GradCAM, localisation
from xray_fastai.models import last_conv_layer, body_stages
from xray_fastai.experiments import hardware

def _batch(dls, items):
    "All `items` as one batch, with their lesion masks"
    x, y = dls.test_dl(items, with_labels=True, bs=len(items)).one_batch()
    return x.cpu().float().as_subclass(Tensor), y.cpu().as_subclass(Tensor), np.stack([lesion_mask(p) for p in items.path])

def _hit_rate(model, layer, x, y, masks) -> float:
    with GradCAM(model, layer) as cam: return localisation(cam(x[y == 1], targets=1), masks[y.numpy() == 1], tol=3).hit.mean()

@call_parse
def main(name:str='explain_phantoms_cpu', # Results file name under bench/results
         epochs:int=12, # Epochs per seed
         n_train:int=1500, # Training phantoms
         size:int=128, # Image side in pixels (and of the phantoms)
         lr:float=3e-3, # Peak learning rate
         seeds:str='0,1,2', # Comma-separated seeds
        ):
    "Train on phantoms once per seed and write Grad-CAM's test pointing game at the layer validation picks"
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    start, rows = time.perf_counter(), []
    for seed in [int(s) for s in seeds.split(',')]:
        learn = classifier_learner(phantom_data(n_train=n_train, n_test=400, size=size), 'binary', size=size, bs=32, aug='none',
                                   seed=seed, learner_kwargs=dict(model_kwargs=dict(widths=(16,32,64,128), hidden=())))
        learn.fit_xray(epochs, lr)
        m = learn.model.eval().cpu()  # the batches below are on the CPU
        (xv, yv, mv), (xt, yt, mt) = [_batch(learn.dls, its) for its in (learn.dls.valid.items, learn.dls.test_split_dl().items)]
        layers = {'last conv': last_conv_layer(m), **{n: o for n, o in body_stages(m)[-3:]}}
        valid = {n: _hit_rate(m, l, xv, yv, mv) for n, l in layers.items()}
        best = max(valid, key=valid.get)
        with torch.no_grad(): acc = (m(xt).argmax(1) == yt).float().mean().item()
        rows.append(dict(seed=seed, test_accuracy=acc, layer=best, valid_hit=valid[best],
                         test_hit=_hit_rate(m, layers[best], xt, yt, mt)))
        pd.DataFrame(rows).to_csv(out/f'{name}.csv', index=False)  # after every seed: a stopped run keeps its rows
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    cmd = 'python bench/explain.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
    md = (f"# {name}\n\nCAM-ready VGG 16-128, {n_train} training / 400 test phantoms at {size} px, {epochs} epochs, lr {lr}, "
          f"no augmentation; Grad-CAM's layer chosen on the validation phantoms; pointing game with a 3-pixel tolerance.\n\n"
          f"Hardware: {hardware()}. Total wall time {time.perf_counter()-start:.0f} s.\n\nCommand: `{cmd}`\n\n"
          f"Test pointing game: {df.test_hit.mean():.3f} ± {df.test_hit.std():.3f} (mean ± std over {len(df)} seeds)\n\n"
          f"```\n{df.round(3).to_string(index=False)}\n```\n")
    (out/f'{name}.md').write_text(md)
    print(md)
