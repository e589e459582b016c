"""Fuzzing the loaders with hypothesis: random and damaged image files, random CSV rows and random CSV bytes end in a
result or in the toolkit's own `XrayDataError`, never in another exception. Bounded to a few hundred examples (seconds)."""
import csv, io, os, warnings
from contextlib import contextmanager
from pathlib import Path
import numpy as np, pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image
from xray_fastai.images import load_xray, write_dicom, XrayDataError, UnreadableImageWarning; from xray_fastai.items import xray_items

# the same examples on every CI run (no flaky CI); new random ones on every local run
FUZZ = settings(max_examples=int(os.environ.get('XRAY_FUZZ_EXAMPLES', 200)), deadline=None, derandomize=bool(os.environ.get('CI')),
                suppress_health_check=list(HealthCheck))

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    "A folder with one good image of each kind, and one broken file"
    d = tmp_path_factory.mktemp('fuzz')
    a = np.random.default_rng(0).integers(0, 255, (24, 20), dtype=np.uint8)
    for ext in ('png', 'jpeg', 'bmp', 'tif', 'gif'): Image.fromarray(a).save(d/f'good.{ext}')
    Image.fromarray(a.astype(np.uint16) * 200).save(d/'good16.png')
    write_dicom(d/'good.dcm', a.astype(np.uint16) * 16, slope=1, intercept=-100, window=(1000, 3000))
    (d/'broken.jpeg').write_bytes(b'not an image')
    return d

KINDS = ['png', 'jpeg', 'bmp', 'tif', 'gif', 'dcm']
MAGIC = [b'', b'\x89PNG\r\n\x1a\n', b'\xff\xd8\xff', b'GIF89a', b'BM', b'II*\x00', b'MM\x00*', b'P5\n', b'\x00' * 128 + b'DICM']

def check(fn:Path):
    "load_xray either decodes `fn` into the asked size or raises XrayDataError"
    try: a = load_xray(fn, size=(12, 10))
    except XrayDataError as e:
        assert fn.name in str(e)
        return
    assert a.shape == (12, 10) and a.dtype == np.uint8

@FUZZ
@given(magic=st.sampled_from(MAGIC), body=st.binary(max_size=1024), ext=st.sampled_from(KINDS))
def test_random_bytes_as_an_image(folder, magic, body, ext):
    fn = folder/f'random.{ext}'; fn.write_bytes(magic + body)
    check(fn)

@FUZZ
@given(kind=st.sampled_from(KINDS + ['16.png']), data=st.data())
def test_damaged_images(folder, kind, data):
    "A good file, truncated and with random bytes overwritten: what a failing disk or a bad transfer does"
    good = (folder/f'good{kind}' if kind == '16.png' else folder/f'good.{kind}').read_bytes()
    b = bytearray(good[:data.draw(st.integers(0, len(good)), label='length')])
    for i, v in data.draw(st.lists(st.tuples(st.integers(0, max(len(b) - 1, 0)), st.integers(0, 255)), max_size=8), label='flips'):
        if b: b[i] = v
    fn = folder/f'damaged.{kind.split(".")[-1]}'; fn.write_bytes(bytes(b))
    check(fn)

def test_the_good_files_are_read(folder):
    for p in folder.glob('good*'): assert load_xray(p, 12).shape == (12, 12)

PATHS = st.one_of(st.sampled_from(['good.png', 'good.dcm', 'good16.png', 'broken.jpeg', 'missing.jpeg', '.', '', 'x' * 300,
                                   'good.png\x00', 'list.csv']), st.text(max_size=20))
LABELS = st.one_of(st.sampled_from(['NORMAL', 'normal', ' Pneumonia ', 'VIRUS', 'bacteria', 'COVID', '']), st.text(max_size=8))
SPLITS = st.one_of(st.sampled_from(['train', 'test', 'val', ' TEST', '', 'holdout']), st.text(max_size=6))
HEADERS = [['path', 'label'], ['path', 'label', 'split'], [' Path', 'LABEL ', 'split'], ['file', 'label'], ['path', 'PATH', 'label'], []]

def check_csv(csv_path:Path):
    "xray_items on `csv_path` returns a table of readable images or raises XrayDataError"
    try: df = xray_items(csv_path)
    except XrayDataError: return
    assert df.columns.tolist() == ['path', 'split', 'binary', 'multiclass', 'patient']
    assert len(df) and df.path.map(os.path.isfile).all() and df.split.isin(['train', 'val', 'test']).all()

@contextmanager
def own_warnings_only():
    "The loaders' own warnings pass; any other warning is an error"
    with warnings.catch_warnings():
        warnings.simplefilter('error'); warnings.simplefilter('ignore', UnreadableImageWarning)
        yield

@FUZZ
@given(header=st.sampled_from(HEADERS), rows=st.lists(st.tuples(PATHS, LABELS, SPLITS, st.integers(1, 3)), max_size=6),
       ragged=st.booleans())
def test_random_csv_rows(folder, header, rows, ragged):
    out = io.StringIO(); w = csv.writer(out)
    if header: w.writerow(header)
    for *r, n in rows: w.writerow(r[:n] if ragged else r[:len(header) or 3])
    fn = folder/'list.csv'; fn.write_text(out.getvalue())
    with own_warnings_only(): check_csv(fn)

@FUZZ
@given(body=st.binary(max_size=512), header=st.sampled_from([b'', b'path,label\n', b'path,label,split\n']))
def test_random_csv_bytes(folder, body, header):
    fn = folder/'bytes.csv'; fn.write_bytes(header + body)
    with own_warnings_only(): check_csv(fn)
