"Determinism: on the CPU, the same seed gives the same training, metric for metric; another seed does not."
import pytest, torch
from fastai.torch_core import set_seed
from xray_fastai.learner import classifier_learner
from xray_fastai.phantoms import make_phantoms

@pytest.fixture(scope='module')
def phantoms(tmp_path_factory):
    return make_phantoms(tmp_path_factory.mktemp('ph')/'data', n_train=48, n_test=12, size=32, seed=5)

def train(source, seed):
    "Two epochs at 32 px with the report's augmentation and mixed precision: the epochs' metrics and the weights"
    set_seed(seed)
    learn = classifier_learner(source, 'binary', size=32, bs=16, aug='report', seed=seed, cache=False,
                               learner_kwargs=dict(model_kwargs=dict(widths=(8, 16))))
    learn.fit_xray(2, 3e-3)
    return [list(map(float, v)) for v in learn.recorder.values], [p.detach().clone() for p in learn.model.parameters()]

def test_same_seed_same_metrics(phantoms):
    (m1, w1), (m2, w2) = train(phantoms, 1), train(phantoms, 1)
    assert len(m1) == 2 and m1 == m2
    assert all(torch.equal(a, b) for a, b in zip(w1, w2))
    m3, w3 = train(phantoms, 2)
    assert m3 != m1 and not all(torch.equal(a, b) for a, b in zip(w1, w3))
