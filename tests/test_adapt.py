"Adapting a saved model to a new site (`adapt.adapted`, `xray-fastai adapt`, `predict --adapt`), on tiny phantoms and an untrained model."
import hashlib, json
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from xray_fastai.cli import main
from xray_fastai.export import save_model
from xray_fastai.predict import load_model, image_files
from xray_fastai.learner import classifier_learner
from xray_fastai.phantoms import phantom_data
from xray_fastai.adapt import adapted, ADAPT_MIN_IMAGES, ADAPT_SHARE

@pytest.fixture(scope='module')
def source(tmp_path_factory):
    "A saved (untrained) VGG for 32 px phantoms, and 40 test phantoms as the new site"
    tmp = tmp_path_factory.mktemp('adapt')
    data = phantom_data(n_train=40, n_test=40, size=32)
    learn = classifier_learner(data, 'binary', size=32, bs=16, aug='none',
                               learner_kwargs=dict(model_kwargs=dict(widths=(8, 16)), fast_precision=False))
    site = image_files(data/'test')
    learn.threshold = 0.5
    save_model(learn, tmp/'model')
    probs = load_model(tmp/'model', device='cpu').predict(site).prob_PNEUMONIA
    learn.threshold = float(np.quantile(probs, 0.25))  # 3 in 4 called PNEUMONIA: a mix the one-class guard accepts
    save_model(learn, tmp/'model')
    return dict(tmp=tmp, model=tmp/'model', site=site)

def _digest(folder:Path) -> dict: return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

def test_adapt_writes_a_new_folder_and_leaves_the_source_unchanged(source, capsys):
    before, out = _digest(source['model']), source['tmp']/'site'
    assert main(['adapt', source['model'], *source['site'], '--out', out]) == 0
    assert _digest(source['model']) == before
    cfg = json.loads((out/'config.json').read_text())
    src = json.loads((source['model']/'config.json').read_text())
    rec = cfg['site_adaptation']
    assert rec['site_adapted'] and rec['n_images'] == 40 and rec['min_images'] == ADAPT_MIN_IMAGES
    assert rec['source_weights_sha256'] == src['weights_sha256'] == hashlib.sha256((source['model']/'model.safetensors').read_bytes()).hexdigest()
    assert rec['share_bounds'] == list(ADAPT_SHARE) and ADAPT_SHARE[0] <= rec['share_not_first_class'] <= ADAPT_SHARE[1]
    assert {'prior', 'layers', 'method'} <= rec.keys() and cfg['weights_sha256'] != src['weights_sha256']
    assert 'site-adapted on 40 images' in repr(load_model(out, device='cpu'))
    capsys.readouterr()
    assert main(['predict', out, source['site'][0]]) == 0
    assert 'site-adapted on 40 images' in capsys.readouterr().out
    assert main(['adapt', source['model'], *source['site'], '--out', out]) == 2  # an existing model needs --overwrite
    assert 'already holds a model' in capsys.readouterr().err
    assert main(['adapt', source['model'], *source['site'], '--out', out, '--overwrite']) == 0
    assert main(['adapt', source['model'], *source['site'], '--out', source['model'], '--overwrite']) == 2
    assert 'is the source model folder' in capsys.readouterr().err and _digest(source['model']) == before

def test_adapted_is_independent_of_file_order_and_batch_size(source):
    pred = load_model(source['model'], device='cpu')
    a = adapted(pred, source['site'], bs=3).predict(source['site'])
    b = adapted(pred, source['site'][::-1], bs=40).predict(source['site'])
    np.testing.assert_allclose(a.prob_PNEUMONIA, b.prob_PNEUMONIA, atol=1e-4)
    assert not np.allclose(a.prob_PNEUMONIA, pred.predict(source['site']).prob_PNEUMONIA, atol=1e-4)  # it did change something
    sa, sb = adapted(pred, source['site'], bs=3).model.state_dict(), adapted(pred, source['site'][::-1], bs=40).model.state_dict()
    for k in sa: torch.testing.assert_close(sa[k].float(), sb[k].float(), atol=1e-4, rtol=1e-4)

def test_too_few_images_are_refused_in_one_line(source, capsys):
    few = source['site'][:ADAPT_MIN_IMAGES - 1]
    with pytest.raises(Exception, match=f'at least {ADAPT_MIN_IMAGES} readable images'): adapted(load_model(source['model'], device='cpu'), few)
    assert main(['adapt', source['model'], *few, '--out', source['tmp']/'few']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f'at least {ADAPT_MIN_IMAGES} readable images' in err and not (source['tmp']/'few'/'config.json').exists()
    assert main(['predict', source['model'], *few, '--adapt']) == 2

def test_predict_adapt_says_so_on_screen_and_in_the_csv(source, capsys):
    csv = source['tmp']/'pred.csv'
    assert main(['predict', source['model'], *source['site'], '--adapt', '--csv', csv]) == 0
    out = capsys.readouterr().out
    assert 'Adapted to these images' in out and '40 readable image(s)' in out and 'site-adapted on 40 images' in out
    df = pd.read_csv(csv)
    assert (df.adapted_on == 40).all() and len(df) == 40
    assert main(['predict', source['model'], *source['site'], '--csv', csv]) == 0
    assert 'adapted_on' not in pd.read_csv(csv).columns and 'Adapted' not in capsys.readouterr().out

def test_an_ensemble_is_adapted_member_by_member(source, capsys):
    import shutil
    from xray_fastai.export import read_config
    from xray_fastai.predict import save_ensemble
    ens = source['tmp']/'ens'
    for i in range(2): shutil.copytree(source['model'], ens/f'member{i}')
    save_ensemble(ens, ['member0', 'member1'], threshold=0.5)
    before = {p: p.read_bytes() for p in sorted(ens.rglob('*')) if p.is_file()}
    out = source['tmp']/'ens-site'
    assert main(['adapt', ens, *source['site'], '--out', out]) == 0
    assert {p: p.read_bytes() for p in sorted(ens.rglob('*')) if p.is_file()} == before
    pred = load_model(out, device='cpu')
    assert 'ensemble of 2' in repr(pred) and 'site-adapted on 40 images' in repr(pred)
    for i in range(2): assert read_config(out/f'member{i}')['site_adaptation']['n_images'] == 40
    single = adapted(load_model(source['model'], device='cpu'), source['site'])  # both members are that model: the same answer
    np.testing.assert_allclose(pred.predict(source['site']).prob_PNEUMONIA, single.predict(source['site']).prob_PNEUMONIA, atol=1e-5)

def test_a_sample_that_looks_like_one_class_is_refused(source, tmp_path, capsys):
    import shutil
    m = shutil.copytree(source['model'], tmp_path/'m')
    cfg = json.loads((m/'config.json').read_text()); cfg['threshold'] = 0.0; (m/'config.json').write_text(json.dumps(cfg))
    assert main(['adapt', m, *source['site'], '--out', tmp_path/'site']) == 2  # every image called PNEUMONIA
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'calls 100% of these 40 images not NORMAL' in err and 'mostly one class' in err
    assert not (tmp_path/'site'/'config.json').exists()
    assert main(['predict', m, *source['site'], '--adapt']) == 2
    pred = adapted(load_model(m, device='cpu'), source['site'], share=None)  # the guard can be switched off from Python
    assert pred.config['site_adaptation']['share_bounds'] is None
