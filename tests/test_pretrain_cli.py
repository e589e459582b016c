"`xray-fastai pretrain` end to end on a tiny data set, its bad options, and `train --pretrained-body` with an ensemble."
import json
from dataclasses import fields
import pytest, torch
from safetensors.torch import load_file
from conftest import write_image
from test_cli import cli
from xray_fastai.cli import main, _parser, pretrain
from xray_fastai.core import PretrainSettings, PRETRAINED

TINY = ['--size', 16, '--bs', 8, '--every', 1]

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "Kaggle's layout, 10 + 10 training and 4 + 4 test images, and a body pretrained on it for 2 epochs at 16 px"
    tmp = tmp_path_factory.mktemp('pretrain')
    for split, n in (('train', 10), ('test', 4)):
        for i in range(n):
            write_image(tmp/'data'/split/'NORMAL'/f'IM-{i:04d}-0001.jpeg', seed=i)
            write_image(tmp/'data'/split/'PNEUMONIA'/f'person{i}_virus_{i}.jpeg', seed=100 + i)
    res = cli('pretrain', '--data', tmp/'data', *TINY, '--epochs', 2, '--out', tmp/'body', cache=tmp/'cache', check=0)
    return dict(tmp=tmp, res=res, cfg=json.loads((tmp/'body'/'config.json').read_text()))

def test_the_options_are_the_settings_fields():
    parsed = vars(_parser(pretrain, 'pretrain').parse_args([]))
    for f in fields(PretrainSettings): assert parsed[f.name] == getattr(PRETRAINED, f.name), f.name

def test_pretrain_writes_a_body_of_the_training_images_only(tiny):
    tmp, cfg = tiny['tmp'], tiny['cfg']
    assert sorted(p.name for p in (tmp/'body').iterdir()) == ['config.json', 'model.safetensors']
    assert cfg['data']['n_images'] == 20 and not cfg['data']['include_test']  # the 8 test images were not read
    assert (cfg['settings']['epochs'], cfg['size'], len(cfg['history'])) == (2, 16, 2)
    assert f"--pretrained-body {tmp/'body'}" in tiny['res'].stdout and 'test images are not read' in tiny['res'].stdout

def test_a_longer_run_goes_on_from_the_cached_snapshots(tiny):
    tmp = tiny['tmp']
    cli('pretrain', '--data', tmp/'data', *TINY, '--epochs', 3, '--out', tmp/'body3', cache=tmp/'cache', check=0)
    cfg = json.loads((tmp/'body3'/'config.json').read_text())
    assert len(cfg['history']) == 3 and cfg['history'][:2] == tiny['cfg']['history']  # the first two epochs were not trained again

def test_transductive_pretraining_says_so(tiny):
    tmp = tiny['tmp']
    res = cli('pretrain', '--data', tmp/'data', *TINY, '--epochs', 1, '--include-test', '--out', tmp/'trans', cache=tmp/'cache', check=0)
    cfg = json.loads((tmp/'trans'/'config.json').read_text())
    assert cfg['data']['n_images'] == 28 and cfg['data']['include_test'] and 'transductive' in res.stdout

def test_every_member_of_an_ensemble_starts_from_the_body(tiny):
    "With a learning rate too small to move them, each member's convolutions are still the body's"
    tmp = tiny['tmp']
    cli('train', '--data', tmp/'data', '--size', 16, '--epochs', 1, '--bs', 8, '--aug', 'none', '--lr', 1e-12, '--ensemble', 2,
        '--pretrained-body', tmp/'body', '--out', tmp/'ens', cache=tmp/'cache', check=0)
    body = {k: v for k, v in load_file(tmp/'body'/'model.safetensors').items() if v.ndim == 4}
    for m in ('member0', 'member1'):
        w = load_file(tmp/'ens'/m/'model.safetensors')
        for k, v in body.items(): torch.testing.assert_close(w[f'0.{k}'].float(), v.float(), atol=1e-6, rtol=0)
        assert json.loads((tmp/'ens'/m/'config.json').read_text())['training']['run_settings']['pretrained_body'] == str(tmp/'body')

@pytest.mark.parametrize('args,msg', [
    (['--epochs', '0'], '--epochs must be at least 1, not 0'),
    (['--lr', 'nan'], '--lr must be in (0, 1], not nan'),
    (['--min-scale', '0'], '--min-scale must be in (0, 1], not 0.0'),
    (['--lighting', '1'], '--lighting must be in [0, 1), not 1.0'),
    (['--every', '0'], '--every must be at least 1, not 0'),
    (['--size', '8'], '--size must be between 16 and 2048, not 8'),
    (['--arch', 'vgj'], 'unknown architecture'),
    (['--out', '{tmp}/afile'], 'afile is a file; give a folder for the pretrained body'),
    (['--out', '{tmp}/body'], 'already holds a pretrained body; choose another --out or pass --overwrite'),
    (['--data', '{tmp}/nowhere'], 'nowhere: no such file or folder'),
    (['--bs', '64'], '20 images to pretrain on, fewer than one batch of 64'),
])
def test_bad_options_are_one_line(tiny, tmp_path, capsys, monkeypatch, args, msg):
    monkeypatch.setenv('XRAY_CACHE', str(tmp_path/'cache'))
    (tiny['tmp']/'afile').write_text('a file')
    argv = ['pretrain', '--data', tiny['tmp']/'data', *TINY, '--epochs', '1', '--out', tmp_path/'out'] + [a.format(tmp=tiny['tmp']) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('xray-fastai pretrain: error: ') and msg in err[0], err
    assert not (tmp_path/'out'/'config.json').exists()

def test_out_is_required(capsys):
    assert main(['pretrain', '--epochs', '1']) == 2 and '--out is required' in capsys.readouterr().err
