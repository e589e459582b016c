"""Benchmark: anomaly detection trained on train/NORMAL only, over seeds, on real data.

Not a test: it trains an autoencoder and a synthetic-opacity model per seed (minutes each). For every score it
reports the validation AUROC (held-out patients of the training folder, used to choose the score), the
threshold at the 95th percentile of validation normals, and the test split's AUROC, AUPRC, accuracy, F1,
sensitivity and specificity at that threshold (`anomaly_results`). Writes bench/results/NAME.csv (one row per seed
and score), NAME.md (mean ± std, the command, the hardware) and NAME_scores_seed0.csv (every image's scores, for figures).

    XRAY_DATA=../shared/data/chest_xray python bench/anomaly.py                      # autoencoder vs synthetic opacities
    XRAY_DATA=../shared/data/chest_xray python bench/anomaly.py --group autoencoders --name anomaly_ae_cpu --seeds 0
    XRAY_DATA=../shared/data/chest_xray python bench/anomaly.py --group opacity --size 128 --name anomaly_opacity128_cpu --seeds 0
"""
from pathlib import Path
from fastcore.script import call_parse
from xray_fastai.core import ANOMALY
from xray_fastai.data import xray_dataloaders
from xray_fastai.anomaly import AE_VARIANTS, autoencoder_scores, autoencoder_variant_scores, anomaly_results
from xray_fastai.opacity import opacity_scores
from xray_fastai.experiments import ResultsWriter, mean_std

@call_parse
def main(name:str='anomaly_cpu', # Results file name under bench/results
         group:str='main', # 'main' (autoencoder vs synthetic-opacity model), 'opacity' (that model alone) or 'autoencoders' (losses, masking, denoising, VAE)
         size:int=ANOMALY.size, # Image side in pixels
         ae_widths:str=','.join(map(str, ANOMALY.ae_widths)), # Autoencoder encoder widths (comma-separated)
         ae_epochs:int=ANOMALY.ae_epochs, # Autoencoder epochs per seed
         opacity_epochs:int=14, # Synthetic-opacity model epochs per seed (the benchmark's first length; the report's is `ANOMALY.opacity_epochs`)
         loss:str='mse', # Autoencoder loss
         pct:float=95, # Threshold: this percentile of validation normals' scores
         seeds:str='0,1,2', # Comma-separated seeds
         data:str=None, # Data folder; $XRAY_DATA by default
         keep:str=None, # Save each synthetic-opacity model's weights here (safetensors, one file per size and seed)
        ):
    "Train the anomaly detectors once per seed and write mean ± std of their test scores"
    w = ResultsWriter(name, Path(__file__).parent/'results')
    widths = tuple(int(w) for w in ae_widths.split(','))
    for seed in (int(s) for s in seeds.split(',')):
        dls = xray_dataloaders(data, task='normal_only', size=size, bs=ANOMALY.bs, aug=ANOMALY.aug, seed=seed)
        ae = lambda: autoencoder_scores(dls, seed, ae_epochs, ANOMALY.ae_lr, widths=widths, loss=loss)
        op = lambda: opacity_scores(dls, seed, opacity_epochs, ANOMALY.opacity_lr, keep=keep)
        scores = dict(main=lambda: {**ae(), **op()}, opacity=op,
                      autoencoders=lambda: autoencoder_variant_scores(dls, seed=seed, epochs=ae_epochs, widths=widths))[group]()
        table, images = anomaly_results({n: f for n, (f, _) in scores.items()}, dls, pct)
        w.add(table.assign(seed=seed, train_s=[s for _, s in scores.values()])[['seed', *table.columns, 'train_s']])
        if seed == 0:  # every image's scores, the path as split/CLASS/file: no local folders
            images.assign(path=images['path'].map(lambda p: '/'.join(Path(p).parts[-3:]))).to_csv(w.folder/f'{name}_scores_seed0.csv', index=False)
    cols = ['test_auroc', 'test_auprc', 'test_accuracy', 'test_f1', 'test_sensitivity', 'test_specificity', 'valid_auroc', 'train_s']
    what = dict(main=f"autoencoder {ae_widths} ({loss} loss) {ae_epochs} epochs, synthetic-opacity VGG {opacity_epochs} epochs",
                opacity=f"synthetic-opacity VGG {opacity_epochs} epochs",
                autoencoders=f"autoencoder variants {list(AE_VARIANTS)}, {ae_widths}, {ae_epochs} epochs")[group]
    print(w.write(name, f"Trained on train/NORMAL only (patient split, light augmentation), {size} px; {what}; threshold at the "
                        f"{pct:g}th percentile of validation normals; seeds {seeds}", mean_std(w.df, cols)))
