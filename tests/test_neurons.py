"The layer and neuron views on every kind of architecture: shapes, hooks released, model left as it was"
import warnings
import pytest, torch, torch.nn as nn
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
from fastai.data.core import TfmdDL
from xray_fastai.models import xray_model, model_body, body_stages
from xray_fastai.explain import n_hooks
from xray_fastai.neurons import stage_activations, channel_maxima, unit_box, activation_maximisation

ARCHS = ['vgg', 'xresnet18', 'resnet18']  # the reference, a fastai xresnet, a timm model

def _model(arch):
    torch.manual_seed(0)
    return xray_model(arch, n_out=2, **(dict(widths=(8,16,16,32)) if arch == 'vgg' else {})).eval()

@pytest.mark.parametrize('arch', ARCHS)
def test_stage_activations(arch):
    m, x = _model(arch), torch.randn(2, 1, 64, 64)
    acts = stage_activations(m, x)
    test_names = [n for n, _ in body_stages(m)]
    assert list(acts) == test_names and all(a.shape[0] == 2 for a in acts.values())
    with torch.no_grad(): assert torch.allclose(acts[test_names[-1]], model_body(m)(x).float())
    assert n_hooks(m) == 0 and not m.training

@pytest.mark.parametrize('arch', ARCHS)
def test_channel_maxima_and_unit_box(arch):
    m, x = _model(arch), torch.randn(6, 1, 64, 64)
    name, layer = body_stages(m)[-2]
    mx = channel_maxima(m, TfmdDL(list(zip(x, torch.zeros(6))), bs=4), layer, progress=False)
    a = stage_activations(m, x)[name]
    assert mx['value'].shape == a.shape[:2] and mx['shape'] == tuple(a.shape[-2:])
    assert torch.allclose(mx['value'], a.flatten(2).max(2)[0])
    i, c = divmod(int(mx['value'].argmax()), a.shape[1])
    assert torch.isclose(a[i, c, mx['row'][i, c], mx['col'][i, c]], mx['value'][i, c])
    t, l, b, r = unit_box(m, layer, x[i], c, int(mx['row'][i, c]), int(mx['col'][i, c]))
    assert 0 <= t < b <= 64 and 0 <= l < r <= 64
    assert n_hooks(m) == 0

@pytest.mark.parametrize('arch', ARCHS)
def test_activation_maximisation_raises_the_channel(arch):
    m = _model(arch).train()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    name, layer = body_stages(m)[-1]
    start = activation_maximisation(m, layer, [0, 0], size=48, steps=0)
    chs = stage_activations(m, start)[name].mean((0, 2, 3)).argsort(descending=True)[:2].tolist()  # live channels: a dead ReLU has no gradient
    grown = activation_maximisation(m, layer, chs, size=48, steps=15)
    gain = [stage_activations(m, im)[name][[0, 1], chs].mean((1, 2)) for im in (start, grown)]
    assert (gain[1] > gain[0]).all()
    assert m.training and n_hooks(m) == 0 and all(p.grad is None for p in m.parameters())
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())  # BatchNorm statistics included
