"Embedding extraction, its cache and kNN, on a tiny Kaggle-layout folder"
import warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
import numpy as np, pytest, torch
from fastai.callback.hook import hook_output
from xray_fastai.data import xray_dataloaders
from xray_fastai.learner import classifier_learner
from xray_fastai.models import xray_model, body_stages, n_features
from xray_fastai.evaluate import classification_scores
from xray_fastai.embeddings import *

def no_hooks(m):
    return all(not o._forward_hooks and not o._forward_pre_hooks and not o._backward_hooks for o in m.modules())

@pytest.fixture
def dls(kaggle_dir, tmp_path, monkeypatch):
    monkeypatch.setenv('XRAY_CACHE', str(tmp_path/'cache'))
    return xray_dataloaders(kaggle_dir, 'multiclass', size=32, bs=8, aug='none')

@pytest.mark.parametrize('arch', ['vgg', 'xresnet18', 'resnet18'])
def test_shapes_and_no_hooks_left(dls, arch):
    m = xray_model(arch, n_out=3, pretrained=False).eval()
    dl = split_dl(dls, 'test', bs=8)
    x = dl.one_batch()[0]
    name, stage = body_stages(m)[-1]
    with torch.no_grad(), hook_output(stage) as h: before = m(x)
    feats, y = extract_features(m, dl, [None, stage], progress=False)
    emb, st = feats.values()
    assert emb.shape == (len(dl.items), n_features(m))
    assert st.shape == (len(dl.items), h.stored.shape[1])
    np.testing.assert_allclose(st[:len(x)], h.stored.float().mean((2, 3)).numpy(), atol=1e-4)
    assert y.tolist() == [dls.vocab.o2i[c] for c in dl.items.multiclass]
    assert no_hooks(m)
    with torch.no_grad(): assert torch.equal(m(x), before)

def test_hooks_removed_after_error(dls):
    m = xray_model('vgg', n_out=3, widths=(8, 16)).eval()
    bad = [(torch.randn(2, 5, 32, 32),)]  # wrong number of channels: the forward fails
    with pytest.raises(RuntimeError): extract_features(m, bad, progress=False)
    assert no_hooks(m)

def test_cache_reused_and_invalidated(dls, tmp_path):
    learn = classifier_learner(dls.all_items, 'multiclass', size=32, bs=8, aug='none',
                               learner_kwargs=dict(model_kwargs=dict(widths=(8, 16))))
    calls = []
    h = learn.model.register_forward_pre_hook(lambda m, i: calls.append(1))
    try:
        e = get_embeddings(learn, 'test', folder=tmp_path/'emb', progress=False)
        n = len(calls); assert n > 0
        e2 = get_embeddings(learn, 'test', folder=tmp_path/'emb', progress=False)
        assert len(calls) == n and np.array_equal(e.x, e2.x) and e.paths == e2.paths and np.array_equal(e.y, e2.y)
        with torch.no_grad(): next(learn.model.parameters()).mul_(2.)
        e3 = get_embeddings(learn, 'test', folder=tmp_path/'emb', progress=False)
        assert len(calls) == 2*n and not np.array_equal(e.x, e3.x)
        assert len(list((tmp_path/'emb').glob('*.npy'))) == 2
    finally: h.remove()

def _toy(n, rng, shuffle=False):
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 8)).astype(np.float32) + 5*y[:, None]
    return Embeddings(x, rng.permutation(y) if shuffle else y, [str(i) for i in range(n)], ['a', 'b'], 'toy')

def test_knn_separable_and_shuffled():
    rng = np.random.default_rng(1)
    knn, grid = fit_knn(_toy(300, rng), _toy(100, rng))
    te = _toy(300, rng)
    assert classification_scores(knn_probs(knn, te), te.y)['accuracy'] == 1.
    knn, _ = fit_knn(_toy(300, rng, shuffle=True), _toy(100, rng, shuffle=True))  # labels independent of the vectors
    te = _toy(2000, rng, shuffle=True)
    assert abs(classification_scores(knn_probs(knn, te), te.y)['accuracy'] - .5) < .06

def test_umap_message(monkeypatch):
    import builtins
    real = builtins.__import__
    def fake(name, *a, **k):
        if name == 'umap': raise ImportError('no umap')
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, '__import__', fake)
    with pytest.raises(ImportError, match=r'xray-fastai\[umap\]'): embedding_map(np.random.rand(20, 4), 'umap')

def _line(xs, y):
    return Embeddings(np.array(xs, np.float32)[:, None], np.array(y), [str(x) for x in xs], ['a', 'b'], 'line')

def test_knn_distance_weights_and_criterion():
    train, valid = _line([0, 1, 1.1], [0, 1, 1]), _line([.05], [0])  # 3 votes: two for 'b'; by distance the nearest 'a' wins
    knn, grid = fit_knn(train, valid, ks=(3,), metrics=('euclidean',), weights=('uniform', 'distance'), by='accuracy')
    assert grid.accuracy.tolist() == [0., 1.] and knn.weights == 'distance'
    knn, grid = fit_knn(train, valid, ks=(3,), metrics=('euclidean',), weights=('uniform', 'distance'), by='log_loss')
    assert knn.weights == 'distance' and grid.log_loss.iloc[1] < grid.log_loss.iloc[0]
    knn, _ = fit_knn(train, valid, ks=(3,), metrics=('euclidean',))  # the default: uniform votes only
    assert knn.weights == 'uniform'
    with pytest.raises(ValueError, match='log_loss'): fit_knn(train, valid, by='roc_auc')
