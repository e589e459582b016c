"Anomaly detectors train on healthy images only, train at all, and rank planted lesions above clean lungs."
import numpy as np, pandas as pd, pytest, torch
import sklearn.metrics as skm
from PIL import Image
from fastai.basics import Callback, first, set_seed
from xray_fastai.data import xray_dataloaders; from xray_fastai.images import XrayDataError
from xray_fastai.phantoms import make_phantoms, chest_phantom, phantom_data
from xray_fastai.anomaly import *
from xray_fastai.opacity import *
from xray_fastai.models import body_stages

@pytest.fixture(scope='module')
def phantoms(tmp_path_factory):
    return make_phantoms(tmp_path_factory.mktemp('ph')/'data', n_train=160, n_test=40, size=48, seed=5)

def _valid_losses(learn): return [v[1] for v in learn.recorder.values]

def test_autoencoder_trains_on_a_few_batches(phantoms):
    learn = anomaly_learner(phantoms, size=48, bs=16, aug='none', widths=(8, 16, 32), latent=4)
    learn.fit(3, 3e-3)
    losses = _valid_losses(learn)
    assert losses[-1] < losses[0], losses

@pytest.mark.parametrize('kwargs', [dict(variational=True), dict(loss='ssim', mask=0.3), dict(loss='mix', noise=0.2)])
def test_variants_train(phantoms, kwargs):
    learn = anomaly_learner(phantoms, size=32, bs=16, widths=(8, 16), latent=4, **kwargs)
    learn.fit(1, 3e-3)
    assert np.isfinite(learn.recorder.values[-1]).all()

class SeenBatches(Callback):
    "Keeps every training input the model is fed"
    order = 100   # after the callbacks that change the input
    def before_fit(self): self.batches = []
    def before_batch(self):
        if self.training: self.batches.append(self.xb[0].detach().float().cpu())

@pytest.fixture(scope='module')
def white_pneumonia(tmp_path_factory):
    "NORMAL images are phantoms; every PNEUMONIA image is plain white, so one that leaks into training shows as a flat input"
    root = tmp_path_factory.mktemp('leak')/'data'
    for split, n in (('train', 40), ('test', 8)):
        for d in ('NORMAL', 'PNEUMONIA'): (root/split/d).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(chest_phantom('normal', 32, rng=i)[0]).save(root/split/'NORMAL'/f'IM-{i:04d}-0001.png')
            Image.new('L', (32, 32), 255).save(root/split/'PNEUMONIA'/f'person{i}_bacteria_{i}.png')
    return root

@pytest.mark.parametrize('split,seed', [('patient', 0), ('report', 1)])
@pytest.mark.parametrize('make_learner', [autoencoder_learner, opacity_learner])
def test_no_pneumonia_image_reaches_training(white_pneumonia, split, seed, make_learner):
    dls = xray_dataloaders(white_pneumonia, task='normal_only', size=32, bs=8, aug='report', split=split, seed=seed)
    assert set(dls.all_items['binary']) == {'NORMAL', 'PNEUMONIA'}   # the sick images are there to leak
    kw = dict(widths=(8, 16), latent=4) if make_learner is autoencoder_learner else dict(widths=(8, 16))
    seen = SeenBatches()
    learn = make_learner(dls, cbs=seen, **kw)
    learn.fit(2, 1e-3)
    x = torch.cat(seen.batches)
    assert len(x) == 2*len(dls.train)*8   # two epochs of full batches
    assert x.flatten(1).std(1).min() > 0.1   # no flat (white) image among them

def test_learners_refuse_labelled_data(phantoms):
    dls = xray_dataloaders(phantoms, size=32, bs=8)
    for make_learner in (autoencoder_learner, opacity_learner):
        with pytest.raises(XrayDataError, match='normal_only'): make_learner(dls)
    dls = xray_dataloaders(phantoms, task='normal_only', size=32, bs=8)
    sick = dls.all_items[dls.all_items['binary'] == 'PNEUMONIA'].iloc[:1]
    dls.train.items = pd.concat([dls.train.items, sick])   # tampered after the fact
    with pytest.raises(XrayDataError, match='non-NORMAL'): autoencoder_learner(dls)

def test_lesions_rank_above_clean_images():
    "The phantoms' own lesions (a dense lobar patch, or bilateral streaks) are unlike `PlantOpacity`'s blobs"
    dls = xray_dataloaders(phantom_data(), task='normal_only', size=32, bs=16, aug='light', seed=0)
    set_seed(0)   # the model's initial weights too: the same run every time
    ae = autoencoder_learner(dls, widths=(16, 32, 64), latent=8)
    ae.fit_one_cycle(3, 3e-3)
    op = opacity_learner(dls, widths=(16, 32, 64))
    op.fit_one_cycle(3, 3e-3)
    for learn in (ae, op): learn.to_full_precision()
    test = anomaly_items(dls, 'test')
    last3 = [m for _, m in body_stages(op.model)][-3:]   # an 8×8 grid at 32 px (the last two stages: 4×4)
    for score in (FeatureDensity(ae.model, list(ae.model.encoder)).fit(dls), FeatureDensity(op.model).fit(dls),
                  PatchMemory(op.model, last3).fit(dls)):
        auroc = anomaly_report(anomaly_scores(score, dls, test), test, threshold=0)["auroc"]
        assert auroc > 0.75
