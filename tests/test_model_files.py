"Model files: save/load round trip, and each kind of damaged or unsafe model file gives a clear error."
import json, math, shutil, warnings
from pathlib import Path
import pytest, torch
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import save_file
from fastai.learner import Learner
from xray_fastai.data import xray_dataloaders; from xray_fastai.core import BINARY; from xray_fastai.images import XrayDataError
from xray_fastai.learner import xray_learner
from xray_fastai import export
from xray_fastai.export import save_model, read_config, model_state, XrayModelError, PickleWarning, CONFIG, WEIGHTS
from xray_fastai.predict import load_model

@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    "An (untrained) learner on a tiny data set, saved with a threshold"
    from conftest import write_image
    tmp = tmp_path_factory.mktemp('model')
    for split in ('train', 'test'):
        for i in range(8):
            write_image(tmp/'data'/split/'NORMAL'/f'IM-{i:04d}-0001.jpeg', seed=i)
            write_image(tmp/'data'/split/'PNEUMONIA'/f'person{i}_virus_{i}.jpeg', seed=50+i)
    dls = xray_dataloaders(tmp/'data', 'binary', size=32, bs=8, aug='none', cache=False)
    learn = xray_learner(dls, 'vgg', fast_precision=False, path=tmp)
    learn.threshold = 0.3
    save_model(learn, tmp/'model')
    return dict(tmp=tmp, learn=learn, folder=tmp/'model')

@pytest.fixture
def copy(saved, tmp_path):
    "A fresh copy of the saved model folder"
    return Path(shutil.copytree(saved['folder'], tmp_path/'model'))

def edit(folder, **kw):
    cfg = json.loads((folder/CONFIG).read_text()); cfg.update(kw); (folder/CONFIG).write_text(json.dumps(cfg))

def test_round_trip_predicts_like_the_learner(saved):
    learn = saved['learn']; dl = learn.dls.test_split_dl()
    probs, _ = learn.get_preds(dl=dl)
    pred = load_model(saved['folder'], device='cpu')
    df = pred.predict(dl.items.path, bs=dl.bs)
    assert torch.equal(torch.tensor(df[['prob_NORMAL', 'prob_PNEUMONIA']].values, dtype=torch.float32), probs)
    assert df.label.tolist() == [BINARY[int(p >= 0.3)] for p in probs[:, 1].tolist()]
    assert issubclass(XrayModelError, XrayDataError)

def test_truncated_weights(copy):
    (copy/WEIGHTS).write_bytes((copy/WEIGHTS).read_bytes()[:500])
    with pytest.raises(XrayModelError, match='does not match the SHA-256'): load_model(copy)
    with pytest.raises(XrayModelError, match='model.safetensors: not a readable safetensors file'): load_model(copy, verify=False)

def test_wrong_shape_weights(copy, saved):
    sd = model_state(saved['learn'].model); sd['1.3.weight'] = torch.zeros(5, sd['1.3.weight'].shape[1])
    save_file(sd, copy/WEIGHTS)
    with pytest.raises(XrayModelError, match=r"wrong shape\(s\): 1.3.weight \(5, 256\) instead of \(2, 256\)"):
        load_model(copy, verify=False)

def test_missing_and_unexpected_keys(copy, saved):
    sd = model_state(saved['learn'].model); sd['extra.weight'] = torch.zeros(1); del sd['0.stem.0.weight']
    save_file(sd, copy/WEIGHTS)
    with pytest.raises(XrayModelError, match=r"1 missing key\(s\): 0.stem.0.weight; 1 unexpected key\(s\): extra.weight"):
        load_model(copy, verify=False)

def test_config_for_another_architecture(copy):
    edit(copy, arch='xresnet18')
    with pytest.raises(XrayModelError, match=r"do not fit the 'xresnet18' network.*missing key"): load_model(copy)
    edit(copy, arch='no_such_architecture')
    with pytest.raises(XrayModelError, match="cannot build architecture 'no_such_architecture'"): load_model(copy)

@pytest.mark.parametrize('change,msg', [
    (lambda d: (d/CONFIG).write_text('{"format": '), 'config.json: not valid JSON'),
    (lambda d: (d/CONFIG).unlink(), 'config.json: no such file'),
    (lambda d: (d/WEIGHTS).unlink(), 'model.safetensors: no such file'),
    (lambda d: edit(d, format_version=99), 'format_version 99 was written by a newer xray_fastai'),
    (lambda d: edit(d, format_version='1'), 'format_version must be an integer'),
    (lambda d: edit(d, stats=[0.5, 0]), 'stats must be'),
    (lambda d: edit(d, vocab=['NORMAL']), 'vocab must be'),
    (lambda d: edit(d, size=[8, 8]), r'size \[8, 8\] is too small for the \'vgg\' network .* at least 15 x 15 pixels'),
    (lambda d: edit(d, size=[300, 14]), r"size \[300, 14\] is too small"),
    (lambda d: edit(d, stats=[0.5, 7.0]), r'std in \[1/255, 1\]'),
    (lambda d: edit(d, stats=[0.0, 4e-102]), r'std in \[1/255, 1\]'),  # hypothesis's find: a positive std so small that (x - mean) / std overflows
    (lambda d: edit(d, stats=[-3, 0.2]), r'mean in \[0, 1\]'),
    (lambda d: edit(d, threshold=1.5), r'threshold must be null or, for two classes, a number in \[0, 1\]'),
    (lambda d: edit(d, task='multiclass'), "task must be null, 'binary' .* not 'multiclass' for 2 classes"),
    (lambda d: edit(d, task='normal_only'), "task must be"),
    (lambda d: edit(d, n_in=3), r'n_in must be 1 \(images are read as one grey channel\)'),
    (lambda d: edit(d, vocab=['NORMAL', 'PNEUMONIA', 'OTHER'], task='multiclass', threshold=None),
     r"wrong shape\(s\): 1.3.weight \(2, 256\) instead of \(3, 256\)"),
    (lambda d: edit(d, model_kwargs={'p': 2.0}), "cannot build architecture 'vgg'"),
])
def test_bad_config(copy, change, msg):
    change(copy)
    with pytest.raises(XrayModelError, match=msg): load_model(copy)

def test_pickle_needs_opt_in(saved, tmp_path):
    learn = saved['learn']
    learn.export(tmp_path/'export.pkl')
    for p in (tmp_path/'export.pkl', tmp_path):  # the file, or a folder holding only a pickle
        with pytest.raises(XrayModelError, match='allow_pickle=True'): load_model(p)
    with pytest.warns(PickleWarning, match='runs any code'):
        pred = load_model(tmp_path/'export.pkl', allow_pickle=True, device='cpu')
    assert pred.vocab == BINARY and pred.size == (32, 32) and pred.threshold == 0.3

def test_failed_save_keeps_the_old_files(copy, saved, monkeypatch):
    before = (copy/WEIGHTS).read_bytes()
    def boom(*a, **k): raise OSError('disk full')
    monkeypatch.setattr(export, 'save_file', boom)
    with pytest.raises(OSError, match='disk full'): save_model(saved['learn'], copy)
    assert (copy/WEIGHTS).read_bytes() == before and sorted(p.name for p in copy.iterdir()) == [CONFIG, WEIGHTS]

class _RunsCode:
    "Unpickling this creates the file `marker`: what a malicious model file could do"
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.touch, (self.marker,))

def test_loading_never_unpickles_without_opt_in(copy, tmp_path):
    import pickle
    from xray_fastai.export import file_sha256
    from xray_fastai.learner import read_checkpoint, CHECKPOINT
    marker = tmp_path/'code_ran'
    evil = pickle.dumps(_RunsCode(marker))
    (tmp_path/'evil.pkl').write_bytes(evil)
    with pytest.raises(XrayModelError, match='allow_pickle=True'): load_model(tmp_path/'evil.pkl')
    (copy/WEIGHTS).write_bytes(evil); edit(copy, weights_sha256=file_sha256(copy/WEIGHTS))  # a pickle under the safe name
    with pytest.raises(XrayModelError, match='not a readable safetensors file'): load_model(copy)
    (tmp_path/CHECKPOINT).write_bytes(evil)  # checkpoints are read with torch.load(weights_only=True)
    with pytest.raises(XrayDataError, match='not a readable checkpoint'): read_checkpoint(tmp_path)
    assert not marker.exists()
    pickle.loads(evil); assert marker.exists()  # the file really runs code when unpickled

def _resign(folder):
    "Record the weights' new checksum, as someone who changed them on purpose would"
    from xray_fastai.export import file_sha256
    edit(folder, weights_sha256=file_sha256(folder/WEIGHTS))

def _nan_weight(saved, folder, value):
    sd = model_state(saved['learn'].model); sd['1.3.weight'][0, 0] = value
    save_file(sd, folder/WEIGHTS); _resign(folder)

@pytest.mark.parametrize('change,msg', [
    (lambda d, s: _nan_weight(s, d, float('nan')), r"1 weight tensor\(s\) hold NaN or infinite values \(1.3.weight\)"),
    (lambda d, s: _nan_weight(s, d, float('-inf')), r"1 weight tensor\(s\) hold NaN or infinite values \(1.3.weight\)"),
    (lambda d, s: edit(d, stats=[float('nan'), 0.25]), r'stats must be \[mean, std\] of pixels on a 0..1 scale'),
    (lambda d, s: edit(d, stats=[0.5, float('inf')]), r'stats must be \[mean, std\] of pixels on a 0..1 scale'),
    (lambda d, s: edit(d, threshold=float('nan')), 'threshold must be'),
    (lambda d, s: edit(d, size=[100000, 100000]), r'size must be \[height, width\] in pixels, 1 to 2048'),
    (lambda d, s: edit(d, model_kwargs=dict(widths=[16, 32, 64, float('inf')])), 'model_kwargs must hold finite numbers only'),
    (lambda d, s: edit(d, model_kwargs=dict(widths=[200000] * 4)), r"do not fit the 'vgg' network .* wrong shape"),  # 10^11 weights if built
    (lambda d, s: (d/CONFIG).write_text('[' * 50000 + ']' * 50000), 'JSON nested too deeply'),
    (lambda d, s: (d/CONFIG).write_text('{"format": "xray_fastai.model", "pad": "' + 'x' * (2 << 20) + '"}'), 'larger than any model config'),
])
def test_model_files_that_would_predict_wrongly_or_exhaust_memory_are_refused(copy, saved, change, msg):
    "NaN weights or statistics would label every image alike; huge sizes, widths or nesting would exhaust memory or the stack"
    change(copy, saved)
    with pytest.raises(XrayModelError, match=msg): load_model(copy, device='cpu')

def _retype(saved, folder, key, dtype):
    sd = model_state(saved['learn'].model); sd[key] = sd[key].to(dtype)
    save_file(sd, folder/WEIGHTS); _resign(folder)

def _negative_var(saved, folder):
    sd = model_state(saved['learn'].model); k = next(k for k in sd if k.endswith('running_var')); sd[k][0] = -1.
    save_file(sd, folder/WEIGHTS); _resign(folder)

@pytest.mark.parametrize('change,msg', [
    (lambda d, s: _retype(s, d, '1.3.weight', torch.int32), r"1 tensor\(s\) stored with a type the network cannot use: 1.3.weight \(I32\)"),
    (lambda d, s: _retype(s, d, '1.3.weight', torch.bool), r"stored with a type the network cannot use: 1.3.weight \(BOOL\)"),
    (lambda d, s: _negative_var(s, d), r"1 batch-norm variance\(s\) below zero"),
])
def test_safetensors_header_and_values_that_the_network_cannot_use(copy, saved, change, msg):
    "The weights file's header (types) and values are checked against the network too, not only its shapes"
    change(copy, saved)
    with pytest.raises(XrayModelError, match=msg): load_model(copy, device='cpu')

def test_half_precision_weights_still_load(copy, saved):
    "A weights file stored in float16 (e.g. converted to save space) holds usable weights: loaded, not refused"
    _retype(saved, copy, '1.3.weight', torch.float16)
    assert load_model(copy, device='cpu').predict(saved['learn'].dls.all_items.path[:2]).error.isna().all()

JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=4),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=6)
SIDES = st.integers(-2, 2100)
FIELDS = dict(  # each field: values a real config could hold, mixed with any JSON value
    arch=st.sampled_from(['vgg', 'xresnet18', 'resnet18', 'no_such_net', '']) | JSON,
    vocab=st.sampled_from([['NORMAL', 'PNEUMONIA'], ['NORMAL', 'BACTERIA', 'VIRUS'], ['A', 'A'], ['x'], []]) | st.lists(st.text(max_size=6), max_size=4) | JSON,
    task=st.sampled_from(['binary', 'multiclass', 'normal_only', None]) | JSON,
    size=st.lists(SIDES, min_size=2, max_size=2) | st.lists(SIDES | JSON, max_size=3) | JSON,
    stats=st.lists(st.floats(-2, 2) | st.sampled_from([0, 1, 1e-300, 1e300]), min_size=2, max_size=2) | JSON,
    threshold=st.floats(-0.5, 1.5) | JSON,
    n_in=st.integers(-1, 4) | JSON,
    model_kwargs=st.fixed_dictionaries({}, optional=dict(widths=st.lists(st.integers(-1, 40), max_size=5) | JSON,
        n_convs=st.integers(-1, 3) | st.lists(st.integers(-1, 3), max_size=5) | JSON, hidden=st.lists(st.integers(-1, 300), max_size=2) | JSON,
        p=st.floats(-1, 2) | JSON, norm=st.sampled_from(['batch', 'group', 'instance', 'batch_stats', 'x']) | JSON)) | JSON,
    ensemble=st.sampled_from([None, []]) | JSON,
    format_version=st.sampled_from([0, 1, 2]) | JSON,
    weights_sha256=st.none() | JSON,
)

@settings(max_examples=int(__import__('os').environ.get('XRAY_FUZZ_EXAMPLES', 200)), deadline=None,
          derandomize=bool(__import__('os').environ.get('CI')), suppress_health_check=list(HealthCheck))
@given(changes=st.fixed_dictionaries({}, optional=FIELDS), drop=st.sets(st.sampled_from(sorted(FIELDS)), max_size=2))
def test_no_config_value_reaches_torch_unchecked(saved, tmp_path_factory, changes, drop):
    "Any values in a model folder's config.json: `load_model` then `predict` give predictions, or one `XrayModelError`"
    d = tmp_path_factory.mktemp('cfg')
    shutil.copy(saved['folder']/WEIGHTS, d)
    cfg = {**json.loads((saved['folder']/CONFIG).read_text()), **changes}
    for k in drop: cfg.pop(k, None)
    (d/CONFIG).write_text(json.dumps(cfg))
    try: df = load_model(d, device='cpu').predict(saved['learn'].dls.all_items.path[:3])
    except XrayModelError as e:
        assert str(d) in str(e) and '\n' not in str(e)
        return
    assert df.error.isna().all() and df.label.isin(cfg['vocab']).all()
    probs = df.filter(like='prob_').to_numpy()
    assert probs.shape[1] == len(cfg['vocab']) and (abs(probs.sum(1) - 1) < 1e-4).all()

NUMBERS = st.one_of(st.integers(-10**7, 10**7), st.floats(allow_nan=True, allow_infinity=True), st.none(), st.text(max_size=3))

@settings(max_examples=150, deadline=None, derandomize=True)
@given(size=st.lists(NUMBERS, max_size=3), stats=st.lists(NUMBERS, max_size=3), threshold=NUMBERS,
       widths=st.lists(NUMBERS, max_size=4))
def test_read_config_accepts_only_finite_values_in_range(saved, tmp_path_factory, size, stats, threshold, widths):
    "Whatever the numbers in a config file, `read_config` returns finite values in range or raises `XrayModelError`"
    d = tmp_path_factory.mktemp('cfg')
    cfg = json.loads((saved['folder']/CONFIG).read_text())
    cfg.update(size=size, stats=stats, threshold=threshold, model_kwargs=dict(widths=widths))
    (d/CONFIG).write_text(json.dumps(cfg))
    try: got = read_config(d)
    except XrayModelError: return
    assert all(isinstance(o, int) and 1 <= o <= 2048 for o in got['size'])
    assert all(math.isfinite(o) for o in got['stats']) and got['stats'][1] > 0
    assert got['threshold'] is None or 0 <= got['threshold'] <= 1
    assert all(math.isfinite(o) for o in got['model_kwargs']['widths'] if isinstance(o, (int, float)))

def test_a_network_that_gives_nan_gets_no_label(copy, saved, tmp_path):
    "Defence in depth: a model whose outputs are NaN (here a NaN bias, loaded without the checks) gives error rows"
    pred = load_model(copy, device='cpu')
    with torch.no_grad(): pred.model[1][3].bias.fill_(float('nan'))
    df = pred.predict(saved['learn'].dls.all_items.path[:4])
    assert df.label.isna().all() and df.error.str.contains('no finite probabilities').all()

@pytest.fixture
def ens(saved, tmp_path):
    "An ensemble folder of two members: the saved model and a copy with other weights"
    from xray_fastai.predict import save_ensemble
    d = tmp_path/'ens'
    shutil.copytree(saved['folder'], d/'member0')
    learn = saved['learn']
    torch.manual_seed(1)
    other = xray_learner(learn.dls, 'vgg', fast_precision=False, path=saved['tmp'])
    save_model(other, d/'member1')
    save_ensemble(d, ['member0', 'member1'], threshold=0.4)
    return d

def test_an_ensemble_predicts_the_mean_of_its_members(ens, saved):
    files = saved['learn'].dls.test_split_dl().items.path
    pred = load_model(ens, device='cpu')
    assert 'ensemble of 2 vgg' in repr(pred) and pred.threshold == 0.4
    ps = [load_model(ens/m, device='cpu').predict(files).prob_PNEUMONIA for m in ('member0', 'member1')]
    df = pred.predict(files)
    assert torch.allclose(torch.tensor(df.prob_PNEUMONIA.values), torch.tensor(((ps[0] + ps[1]) / 2).values), atol=1e-6)
    assert df.label.tolist() == [BINARY[int(p >= 0.4)] for p in df.prob_PNEUMONIA]

def test_saving_a_loaded_ensemble_again_keeps_it_loadable(ens, tmp_path):
    from xray_fastai.predict import save_predictor
    pred = load_model(ens, device='cpu')
    save_predictor(pred, tmp_path/'again', {'note': 'copy'})
    again = load_model(tmp_path/'again', device='cpu')
    assert json.loads((tmp_path/'again'/CONFIG).read_text())['note'] == 'copy' and 'ensemble of 2' in repr(again)
    assert json.loads((tmp_path/'again'/'member1'/CONFIG).read_text())['note'] == 'copy'
    x = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(again.probs(x), pred.probs(x))

@pytest.mark.parametrize('change,msg', [
    (lambda d: edit(d, ensemble=[{'folder': '../member0', 'config_sha256': 'x'}]), 'ensemble must list'),
    (lambda d: edit(d, ensemble=[{'folder': f'm{i}', 'config_sha256': 'x'} for i in range(21)]), 'ensemble must list'),
    (lambda d: edit(d, ensemble=[]), 'ensemble must list'),
    (lambda d: edit(d/'member1', vocab=['A', 'B']), 'member1/config.json: the file does not match the SHA-256'),
])
def test_bad_ensemble_configs(ens, change, msg):
    change(ens)
    with pytest.raises(XrayModelError, match=msg.replace('.', r'\.')): load_model(ens, device='cpu')

def test_members_that_disagree_are_refused(ens):
    from xray_fastai.predict import save_ensemble
    edit(ens/'member1', stats=[0.1, 0.2])
    with pytest.raises(XrayModelError, match='differs from member0 in stats'): save_ensemble(ens, ['member0', 'member1'])
