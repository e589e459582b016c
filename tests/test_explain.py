"Grad-CAM / Grad-CAM++ against pytorch-grad-cam, and what the CAM objects leave behind"
import warnings
import numpy as np, pytest, torch, torch.nn as nn, torch.nn.functional as F
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
from xray_fastai.models import xray_model, last_conv_layer, model_body, body_stages
from xray_fastai.explain import GradCAM, GradCAMPlusPlus, CAM, n_hooks

pgc = pytest.importorskip('pytorch_grad_cam', reason="pytorch-grad-cam is not installed (pip install grad-cam, in the `dev` extra)")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

PAIRS = [(GradCAM, pgc.GradCAM), (GradCAMPlusPlus, pgc.GradCAMPlusPlus)]

def _model(arch='vgg', seed=0):
    torch.manual_seed(seed)
    kw = dict(widths=(8,16,32,32)) if arch == 'vgg' else {}
    m = xray_model(arch, n_out=3, hidden=(), **kw).eval()
    # Random BatchNorm statistics, so that the maps are not those of a freshly initialised network
    for o in m.modules():
        if isinstance(o, nn.BatchNorm2d):
            o.running_mean.normal_(0, .1); o.running_var.uniform_(.5, 2); o.weight.data.uniform_(.5, 1.5); o.bias.data.normal_(0, .1)
    return m

def _layers(m):
    "The default layer (a raw convolution, before BatchNorm and ReLU) and the output of the body's last stage"
    return [last_conv_layer(m), body_stages(m)[-1][1]]

def _theirs_raw(ours_cls, theirs_cls, m, layer, x, targets):
    "pytorch-grad-cam's map at the layer's resolution: its weights and weighted sum, then ReLU and its min-max scaling"
    cam = theirs_cls(model=m, target_layers=[layer])
    try:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])  # fills activations and gradients
        acts = cam.activations_and_grads.activations[0].numpy(); grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(x, layer, None, acts, grads)
    finally: cam.activations_and_grads.release()
    raw = np.maximum(raw, 0)
    raw = raw - raw.min((1,2), keepdims=True)
    return raw / (1e-7 + raw.max((1,2), keepdims=True))

@pytest.mark.parametrize('arch', ['vgg', 'xresnet18'])
@pytest.mark.parametrize('ours_cls,theirs_cls', PAIRS)
def test_agrees_with_pytorch_grad_cam(arch, ours_cls, theirs_cls):
    m = _model(arch)
    x = torch.randn(5, 1, 64, 64)
    targets = [0, 1, 2, 1, 0]
    for layer in _layers(m):
        # Full pipeline at the input's resolution: pytorch-grad-cam resizes with cv2 (bilinear, pixel centres)
        with ours_cls(m, layer) as ours: mine = ours(x, targets).numpy()
        theirs_cam = theirs_cls(model=m, target_layers=[layer])
        try: theirs = theirs_cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        finally: theirs_cam.activations_and_grads.release()
        assert mine.shape == theirs.shape == (5, 64, 64)
        assert np.abs(mine - theirs).max() < 1e-4
        # At the layer's resolution, where no resizing is involved
        with ours_cls(m, layer) as ours: mine_raw = ours(x, targets, upsample=False).numpy()
        theirs_raw = _theirs_raw(ours_cls, theirs_cls, m, layer, x, targets)
        assert np.abs(mine_raw - theirs_raw).max() < 1e-4
        assert theirs_raw.std() > 0.05  # a real comparison, not two blank maps

def test_predicted_class_by_default():
    m = _model()
    x = torch.randn(4, 1, 64, 64)
    with GradCAM(m) as cam: mine = cam(x).numpy(); pred = cam.targets
    assert torch.equal(pred, m(x).argmax(1))
    theirs_cam = pgc.GradCAM(model=m, target_layers=[last_conv_layer(m)])
    try: theirs = theirs_cam(input_tensor=x, targets=None)
    finally: theirs_cam.activations_and_grads.release()
    assert np.abs(mine - theirs).max() < 1e-4

@pytest.mark.parametrize('cls', [GradCAM, GradCAMPlusPlus, CAM])
def test_model_unchanged(cls):
    m = _model(); m.train()
    x = torch.randn(3, 1, 64, 64)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    with cls(m) as cam:
        assert n_hooks(m) == 1
        cam(x); cam(x, targets=2)
    assert n_hooks(m) == 0 and m.training
    assert all(p.grad is None for p in m.parameters())
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())
    m.eval()
    with torch.no_grad(): assert torch.equal(m(x), torch.func.functional_call(m, sd, (x,)))

def test_existing_grads_kept():
    m = _model()
    m(torch.randn(2, 1, 64, 64)).sum().backward()
    before = [p.grad.clone() for p in m.parameters()]
    with GradCAM(m) as cam: cam(torch.randn(2, 1, 64, 64))
    assert all(torch.equal(b, p.grad) for b, p in zip(before, m.parameters()))

class Gate(nn.Module):
    "Zero everything but the top-left quadrant"
    def forward(self, a):
        g = torch.zeros_like(a); g[..., :a.shape[-2]//2, :a.shape[-1]//2] = 1
        return a*g

class QuadrantNet(nn.Module):
    "Logit of class 1: mean of the feature map's top-left quadrant (the rest is gated out)"
    def __init__(self):
        super().__init__()
        self.conv, self.gate = nn.Conv2d(1, 4, 3, padding=1), Gate()
    def forward(self, x):
        s = self.gate(F.relu(self.conv(x))).mean((1, 2, 3))
        return torch.stack([-s, s], 1)

@pytest.mark.parametrize('cls', [GradCAM, GradCAMPlusPlus])
def test_quadrant_model_lights_its_quadrant(cls):
    torch.manual_seed(0)
    m, x = QuadrantNet(), torch.rand(4, 1, 32, 48)  # not square: rows and columns cannot be swapped unnoticed
    with cls(m, m.gate) as cam: h = cam(x, targets=1)
    assert h[:, :16, :24].mean() > 0.2
    assert h[:, 16:, :].max() == 0 and h[:, :, 24:].max() == 0

def test_cam_quadrant():
    "A GAP→Linear model whose only non-zero body output is in the top-left quadrant"
    class Body(nn.Module):
        def forward(self, x):
            a = torch.zeros(x.shape[0], 2, 8, 8); a[:, :, :4, :4] = x[:, :, :4, :4].abs().mean() + 1; return a
    m = nn.Sequential(Body(), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)))
    with torch.no_grad(): m[1][-1].weight.copy_(torch.tensor([[-1., -1.], [1., 1.]]))
    with CAM(m) as cam: h = cam(torch.rand(2, 1, 8, 8), targets=1, upsample=False)
    assert (h[:, :4, :4] == 1).all() and (h[:, 4:, :] == 0).all() and (h[:, :, 4:] == 0).all()
