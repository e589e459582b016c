"""Benchmark: anomaly detection trained on train/NORMAL only, over seeds, on real data.

Not a test: it trains an autoencoder and a synthetic-opacity model per seed (minutes each). For every score it
reports the validation AUROC (held-out patients of the training folder, used to choose the score), the
threshold at the 95th percentile of validation normals, and the test split's AUROC, AUPRC, accuracy, F1,
sensitivity and specificity at that threshold. Writes bench/results/NAME.csv (one row per seed and score),
NAME.md (mean ± std, the command, the hardware) and NAME_scores_seed0.csv (every image's scores, for figures).

    XRAY_DATA=../shared/data/chest_xray python bench/anomaly.py                      # autoencoder vs synthetic opacities
    XRAY_DATA=../shared/data/chest_xray python bench/anomaly.py --group autoencoders --name anomaly_ae_cpu --seeds 0
    XRAY_DATA=../shared/data/chest_xray python bench/anomaly.py --group opacity --size 128 --name anomaly_opacity128_cpu --seeds 0
"""
import shlex, sys, time
from pathlib import Path
import pandas as pd
from fastcore.script import call_parse
from safetensors.torch import save_file
from fastai.basics import set_seed, merge
from xray_fastai.data import xray_dataloaders
from xray_fastai.anomaly import *
from xray_fastai.models import body_stages
from xray_fastai.experiments import mean_std, hardware

def _fit(learn, epochs:int, lr:float) -> float:
    "Train with one-cycle, return to full precision, give the training time in seconds"
    start = time.perf_counter()
    learn.fit_one_cycle(epochs, lr)
    learn.to_full_precision()
    return time.perf_counter() - start

def _score_rows(scores:dict, dls, seed:int, pct:float) -> tuple:
    "Rows of the results table for each score (`anomaly_results`, with the seed and training time), and every image's scores"
    table, images = anomaly_results({n: f for n, (f, _) in scores.items()}, dls, pct)
    table.insert(0, 'seed', seed); table['train_s'] = [s for _, s in scores.values()]
    images['path'] = images['path'].map(lambda p: '/'.join(Path(p).parts[-3:]))   # split/CLASS/file: no local folders
    return table.to_dict('records'), images

def _autoencoder_scores(dls, seed:int, epochs:int, name:str='AE', **kwargs) -> dict:
    "Train an autoencoder; its reconstruction scores and its encoder's feature density"
    set_seed(seed)
    ae = autoencoder_learner(dls, **kwargs)
    s = _fit(ae, epochs, 3e-3)
    return {f'{name} mse': (ReconstructionScore(ae.model, 'mse'), s),
            f'{name} ssim': (ReconstructionScore(ae.model, 'ssim', 1/dls.stats[1]), s),
            f'{name} encoder density': (FeatureDensity(ae.model, list(ae.model.encoder)).fit(dls), s)}

def _opacity_scores(dls, seed:int, epochs:int, keep:str=None) -> dict:
    "Train the synthetic-opacity model (its weights saved into `keep`); its probability, feature densities, patch memories and z-score sums"
    set_seed(seed)
    op = opacity_learner(dls)
    s = _fit(op, epochs, 2e-3)
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in op.model.state_dict().items()}, Path(keep)/f'opacity_{dls.size}px_seed{seed}.safetensors')
    prob, emb = ClassifierScore(op.model), FeatureDensity(op.model).fit(dls)
    stages = [m for _, m in body_stages(op.model)]
    body = FeatureDensity(op.model, stages).fit(dls)
    patch2, patch3 = PatchMemory(op.model, stages[-2:], seed=seed).fit(dls), PatchMemory(op.model, stages[-3:], seed=seed).fit(dls)
    singles = {'opacity model': prob, 'opacity embedding density': emb, 'opacity body density': body,
               'opacity patch memory, last 2 stages': patch2, 'opacity patch memory, last 3 stages': patch3}
    combined = {'opacity model + embedding density': [prob, emb], 'opacity model + body density': [prob, body],
                'opacity model + both densities': [prob, emb, body], 'opacity model + patch memory, last 2 stages': [prob, patch2]}
    return {**{n: (f, s) for n, f in singles.items()}, **{n: (CombinedScore(fs).fit(dls), s) for n, fs in combined.items()}}

def run_seed(dls, seed:int, ae_widths:tuple, ae_epochs:int, opacity_epochs:int, loss:str) -> dict:
    "The main comparison: the autoencoder's scores and the synthetic-opacity model's"
    return {**_autoencoder_scores(dls, seed, ae_epochs, widths=ae_widths, loss=loss), **_opacity_scores(dls, seed, opacity_epochs)}

AE_VARIANTS = {'AE (mse loss)': dict(loss='mse'), 'AE (ssim loss)': dict(loss='ssim'), 'AE (mix loss)': dict(loss='mix'),
               'AE (masked)': dict(mask=0.25), 'AE (denoising)': dict(noise=0.3), 'VAE': dict(variational=True)}

def run_autoencoders(dls, seed:int, ae_widths:tuple, ae_epochs:int) -> dict:
    "The autoencoder variants: losses, masking, denoising, variational"
    return merge(*[_autoencoder_scores(dls, seed, ae_epochs, name, widths=ae_widths, **kw) for name, kw in AE_VARIANTS.items()])

@call_parse
def main(name:str='anomaly_cpu', # Results file name under bench/results
         group:str='main', # 'main' (autoencoder vs synthetic-opacity model), 'opacity' (that model alone) or 'autoencoders' (losses, masking, denoising, VAE)
         size:int=96, # Image side in pixels
         ae_widths:str='16,32,64,128', # Autoencoder encoder widths (comma-separated)
         ae_epochs:int=8, # Autoencoder epochs per seed
         opacity_epochs:int=14, # Synthetic-opacity model epochs per seed
         loss:str='mse', # Autoencoder loss
         pct:float=95, # Threshold: this percentile of validation normals' scores
         seeds:str='0,1,2', # Comma-separated seeds
         data:str=None, # Data folder; $XRAY_DATA by default
         keep:str=None, # Save each synthetic-opacity model's weights here (safetensors, one file per size and seed)
        ):
    "Train the anomaly detectors once per seed and write mean ± std of their test scores"
    out = Path(__file__).parent/'results'; out.mkdir(exist_ok=True)
    start, rows = time.perf_counter(), []
    for seed in (int(s) for s in seeds.split(',')):
        dls = xray_dataloaders(data, task='normal_only', size=size, bs=32, aug='light', seed=seed)
        widths = tuple(int(w) for w in ae_widths.split(','))
        scores = {'main': lambda: run_seed(dls, seed, widths, ae_epochs, opacity_epochs, loss),
                  'opacity': lambda: _opacity_scores(dls, seed, opacity_epochs, keep),
                  'autoencoders': lambda: run_autoencoders(dls, seed, widths, ae_epochs)}[group]()
        r, images = _score_rows(scores, dls, seed, pct)
        rows += r
        if seed == 0: images.to_csv(out/f'{name}_scores_seed0.csv', index=False)
        pd.DataFrame(rows).to_csv(out/f'{name}.csv', index=False)   # after every seed: a long run keeps what it did
    df = pd.DataFrame(rows)
    cols = ['test_auroc', 'test_auprc', 'test_accuracy', 'test_f1', 'test_sensitivity', 'test_specificity', 'valid_auroc', 'train_s']
    table = mean_std(df, cols)
    cmd = 'python bench/anomaly.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
    what = dict(main=f"autoencoder {ae_widths} ({loss} loss) {ae_epochs} epochs, synthetic-opacity VGG {opacity_epochs} epochs",
                opacity=f"synthetic-opacity VGG {opacity_epochs} epochs",
                autoencoders=f"autoencoder variants {list(AE_VARIANTS)}, {ae_widths}, {ae_epochs} epochs")[group]
    md = (f"# {name}\n\nTrained on train/NORMAL only (patient split, light augmentation), {size} px; {what}; threshold at the {pct:g}th "
          f"percentile of validation normals; seeds {seeds}\n\nHardware: {hardware()}. Total wall time "
          f"{time.perf_counter()-start:.0f} s.\n\nCommand: `{cmd}`\n\n```\n{table.to_string()}\n```\n")
    (out/f'{name}.md').write_text(md)
    print(md)
