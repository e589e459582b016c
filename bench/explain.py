"""Benchmark: Grad-CAM's pointing game on the phantoms over seeds, for one training configuration.

Not a test. Per seed: train the CAM-ready VGG on phantoms (`phantom_learner`), choose Grad-CAM's layer (last convolution or the
output of one of the last three stages) on the validation phantoms and score the 400 test phantoms (`pointing_game`).
Writes bench/results/NAME.csv (one row per seed) and NAME.md (mean ± std, the command, the hardware). Example (the
explain chapter's configuration):

    python bench/explain.py --name explain_phantoms_cpu_n3000 --n-train 3000
"""
from pathlib import Path
from fastcore.script import call_parse
from xray_fastai.learner import phantom_learner
from xray_fastai.explain import pointing_game
from xray_fastai.experiments import ResultsWriter

@call_parse
def main(name:str='explain_phantoms_cpu', # Results file name under bench/results
         epochs:int=12, # Epochs per seed
         n_train:int=3000, # Training phantoms (3,000: chosen on validation, see the explain chapter)
         size:int=128, # Image side in pixels (and of the phantoms)
         lr:float=3e-3, # Peak learning rate
         seeds:str='0,1,2', # Comma-separated seeds
        ):
    "Train on phantoms once per seed and write Grad-CAM's test pointing game at the layer validation picks"
    w = ResultsWriter(name, Path(__file__).parent/'results')
    for seed in [int(s) for s in seeds.split(',')]:
        learn = phantom_learner(seed, n_train, size)
        learn.fit_xray(epochs, lr)
        df = w.add(dict(seed=seed, **pointing_game(learn)))
        print(w.rows[-1], flush=True)
    print(w.write(name, f"CAM-ready VGG 16-128, {n_train} training / 400 test phantoms at {size} px, {epochs} epochs, lr {lr}, "
                        f"no augmentation; Grad-CAM's layer chosen on the validation phantoms; pointing game with a 3-pixel "
                        f"tolerance.\n\nTest pointing game: {df.test_hit.mean():.3f} ± {df.test_hit.std():.3f} (mean ± std over "
                        f"{len(df)} seeds)", df.round(3).to_string(index=False)))
