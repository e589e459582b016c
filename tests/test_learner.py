"Classifier learners train on phantoms and on real images; the test split never reaches fitting or threshold choice."
import pandas as pd, pytest, torch
from fastai.callback.all import ShortEpochCallback
from xray_fastai.items import xray_items; from xray_fastai.data import xray_dataloaders; from xray_fastai.core import BINARY, MULTICLASS
from xray_fastai.learner import classifier_learner, xray_learner
from xray_fastai.phantoms import make_phantoms

@pytest.fixture(scope='module')
def phantoms(tmp_path_factory):
    return make_phantoms(tmp_path_factory.mktemp('ph')/'data', n_train=80, n_test=24, size=48, seed=3)

def _fit_two_batches(learn):
    before = [p.detach().clone() for p in learn.model.parameters()]
    learn.fit(1, 1e-3, cbs=ShortEpochCallback(pct=2/len(learn.dls.train), short_valid=False))
    return any(not torch.equal(a, b.detach()) for a, b in zip(before, learn.model.parameters()))

@pytest.mark.parametrize('task,vocab', [('binary', BINARY), ('multiclass', MULTICLASS)])
def test_learner_trains_on_phantoms(phantoms, task, vocab):
    learn = classifier_learner(phantoms, task, size=48, bs=16, aug='report', learner_kwargs=dict(model_kwargs=dict(widths=(8, 16))))
    assert list(learn.dls.vocab) == vocab
    assert _fit_two_batches(learn)
    assert len(learn.recorder.values) == 1

def test_learner_trains_on_real_images(real_data, tmp_path):
    items = xray_items(real_data)
    sub = items.groupby(['split', 'multiclass']).head(12)
    csv = tmp_path/'subset.csv'
    sub[['path', 'multiclass', 'split']].rename(columns={'multiclass': 'label'}).to_csv(csv, index=False)
    dls = xray_dataloaders(csv, 'multiclass', size=64, bs=8, balance='weighted', cache=False)
    learn = xray_learner(dls, 'vgg', model_kwargs=dict(widths=(8, 16, 32)))
    assert _fit_two_batches(learn)

def test_threshold_is_picked_on_validation_only(phantoms, monkeypatch):
    learn = classifier_learner(phantoms, 'binary', size=48, bs=16, aug='none', learner_kwargs=dict(model_kwargs=dict(widths=(8, 16))))
    learn.fit(1, 1e-3, cbs=ShortEpochCallback(pct=0.5, short_valid=False))
    test_paths = set(learn.dls.all_items.query("split == 'test'").path)
    seen = []
    orig = type(learn).get_preds
    def spy(self, ds_idx=1, dl=None, **kw):
        seen.extend((dl or self.dls[ds_idx]).items.path)
        return orig(self, ds_idx=ds_idx, dl=dl, **kw)
    monkeypatch.setattr(type(learn), 'get_preds', spy)
    thr = learn.pick_threshold('sensitivity', 0.9)
    assert 0 <= thr <= 1 and learn.threshold == thr
    assert seen and not test_paths & set(seen)
    assert set(seen) == set(learn.dls.valid.items.path)

def test_training_rows_never_include_test_images(phantoms):
    dls = xray_dataloaders(phantoms, 'binary', size=48, bs=16, balance='oversample')
    fit = set(dls.train.items.path) | set(dls.valid.items.path)
    assert not fit & set(dls.all_items.query("split == 'test'").path)
    assert set(dls.test_split_dl().items.path) == set(dls.all_items.query("split == 'test'").path)

def test_evaluate_on_a_test_split_smaller_than_top_k(tmp_path):
    "The report folder is written even when the test split has fewer images than the most-confused grid"
    from xray_fastai.evaluate import evaluate
    data = make_phantoms(tmp_path/'data', n_train=40, n_test=4, size=32, seed=1)
    learn = classifier_learner(data, 'binary', size=32, bs=8, learner_kwargs=dict(model_kwargs=dict(widths=(8, 16))))
    learn.fit(1, 1e-3)
    res = evaluate(learn, folder=tmp_path/'report', top_k=9)
    assert res['argmax']['n'] == 4
    assert (tmp_path/'report'/'most_confused.png').stat().st_size > 0

def test_tta_after_fit_xray(phantoms):
    "fastai's `tta` runs `after_fit` once training is over: the best epoch's weights, removed by then, are not reloaded"
    learn = classifier_learner(phantoms, 'binary', size=48, bs=16, aug='report', learner_kwargs=dict(model_kwargs=dict(widths=(8, 16))))
    learn.fit_xray(1, 1e-3)
    assert not (learn.path/learn.model_dir/'best.pth').exists()
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    probs, targets = learn.tta(dl=learn.dls.valid, n=2)
    assert probs.shape == (len(learn.dls.valid.items), 2) and torch.allclose(probs.sum(1), torch.ones(len(probs)))
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())  # the trained weights stay
