"Image formats and shapes a scanner or a folder may hold: RGBA and palette PNGs, 16-bit greys, tiny, non-square and huge images, DICOM."
import struct, sys, warnings, zlib
from pathlib import Path
import numpy as np, pytest, torch
from hypothesis import given, settings, strategies as st
from PIL import Image
from torch import nn
from fastai.callback.all import ShortEpochCallback
from conftest import write_image
from xray_fastai.images import load_xray, write_dicom, XrayDataError, UnreadableImageWarning; from xray_fastai.items import xray_items; from xray_fastai.data import xray_dataloaders
from xray_fastai.predict import XrayPredictor
from xray_fastai.learner import xray_learner

# a chest-like picture: bright body, two dark lungs
CHEST = np.full((40, 32), 200, dtype=np.uint8)
CHEST[8:32, 4:14] = CHEST[8:32, 18:28] = 30

def png_header_only(path:Path, width:int, height:int) -> Path:
    "A PNG that declares `width` x `height` pixels but holds almost no data, as a decompression bomb would"
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))
    return path

def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.dstack([CHEST, CHEST, CHEST, np.full_like(CHEST, 7)])  # nearly transparent: alpha is not part of the X-ray
    Image.fromarray(rgba, 'RGBA').save(tmp_path/'a.png')
    np.testing.assert_array_equal(load_xray(tmp_path/'a.png'), CHEST)

def test_palette_png_is_read_through_its_palette(tmp_path):
    im = Image.fromarray((CHEST > 100).astype(np.uint8), 'P')  # an indexed image: stored values are palette indices 0 and 1
    im.putpalette([30, 30, 30, 200, 200, 200])
    im.save(tmp_path/'p.png')
    assert Image.open(tmp_path/'p.png').mode == 'P' and not np.array_equal(np.asarray(Image.open(tmp_path/'p.png')), CHEST)
    np.testing.assert_array_equal(load_xray(tmp_path/'p.png'), CHEST)

def test_16bit_grey_png_is_scaled_to_its_range_not_clipped(tmp_path):
    a16 = CHEST.astype(np.uint16) * 100 + 5000  # 8000..25000: all above 255
    Image.fromarray(a16).save(tmp_path/'g16.png')
    assert Image.open(tmp_path/'g16.png').mode.startswith('I')
    got = load_xray(tmp_path/'g16.png')
    assert got.min() == 0 and got.max() == 255 and len(np.unique(got)) == 2  # clipping would give one value, 255
    np.testing.assert_array_equal(got, np.where(CHEST > 100, 255, 0))

def test_tiny_and_non_square_images_are_resized_to_the_model_size(tmp_path):
    write_image(tmp_path/'tiny.png', size=(28, 28))
    write_image(tmp_path/'wide.jpeg', size=(120, 300))
    for fn in ('tiny.png', 'wide.jpeg'):
        assert load_xray(tmp_path/fn, size=64).shape == (64, 64)
        assert load_xray(tmp_path/fn, size=(64, 48)).shape == (64, 48)
    assert load_xray(tmp_path/'wide.jpeg').shape == (120, 300)

def test_a_huge_image_is_a_clear_error_before_decoding(tmp_path):
    bomb = png_header_only(tmp_path/'huge.png', 100_000, 100_000)  # 10 gigapixels declared, 100 bytes on disk
    assert bomb.stat().st_size < 200
    with pytest.raises(XrayDataError, match=r'huge.png: too large to read safely.*MAX_IMAGE_PIXELS'): load_xray(bomb)

def test_an_image_just_over_the_limit_is_an_error_not_a_warning(tmp_path, monkeypatch):
    write_image(tmp_path/'big.png', size=(40, 40))
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)  # 1600 pixels: PIL only warns below twice the limit
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with pytest.raises(XrayDataError, match='big.png: too large to read safely'): load_xray(tmp_path/'big.png')

# DICOM: 12-bit values as a digital radiograph stores them
STORED = CHEST.astype(np.uint16) * 16  # lungs 480, body 3200

def test_dicom_monochrome1_is_inverted_to_look_like_monochrome2(tmp_path):
    mono2 = load_xray(write_dicom(tmp_path/'m2.dcm', STORED))
    mono1 = load_xray(write_dicom(tmp_path/'m1.dcm', 4095 - STORED, 'MONOCHROME1'))  # same picture, low values bright
    np.testing.assert_array_equal(mono1, mono2)
    assert mono2[20, 8] < mono2[2, 2]  # lungs darker than the body, as in the JPEGs
    np.testing.assert_array_equal(mono2, np.where(CHEST > 100, 255, 0))

def test_dicom_rescale_slope_and_intercept_then_window(tmp_path):
    # Hounsfield-like units: 0.5 * stored - 1000: lungs -760, body 600; a window of [-1000, 1000] maps them to 30 and 204
    got = load_xray(write_dicom(tmp_path/'r.dcm', STORED, slope=0.5, intercept=-1000, window=(0, 2000)))
    np.testing.assert_array_equal(np.unique(got), [31, 204])
    assert got[20, 8] == 31 and got[2, 2] == 204
    # a narrow window clips: everything above its top is white
    got = load_xray(write_dicom(tmp_path/'w.dcm', STORED, slope=0.5, intercept=-1000, window=(-800, 200)))
    assert got[2, 2] == 255 and got[20, 8] == round((-760 + 900) / 200 * 255)

def test_dicom_files_are_listed_and_trained_on(tmp_path):
    root = tmp_path/'flat'
    (root/'NORMAL').mkdir(parents=True)
    for i in range(6):
        write_dicom(root/'NORMAL'/f'IM-{i:04d}-0001.dcm', STORED + i)
        write_image(root/'PNEUMONIA'/f'person{i}_virus_{i}.jpeg', seed=i)
    (root/'PNEUMONIA'/'person9_virus_9.dcm').write_bytes(b'\0' * 128 + b'DICM' + b'damaged')
    with pytest.warns(UnreadableImageWarning, match=r'person9_virus_9.dcm'):
        items = xray_items(root, max_bad=0.2)
    assert (items.path.str.endswith('.dcm')).sum() == 6
    dls = xray_dataloaders(items, size=32, bs=4, aug='none', valid_pct=0.34, cache=False)
    x, _ = dls.one_batch()
    assert x.shape == (4, 1, 32, 32)

def test_dicom_without_pydicom_says_how_to_install(tmp_path, monkeypatch):
    fn = write_dicom(tmp_path/'a.dcm', STORED)
    monkeypatch.setitem(sys.modules, 'pydicom', None)
    with pytest.raises(ImportError, match=r'a.dcm: reading DICOM files needs pydicom: pip install "xray-fastai\[dicom\]"'):
        load_xray(fn)

@pytest.fixture
def mixed_folder(tmp_path):
    "A folder with one image of every format above, and files that cannot be read"
    d = tmp_path/'scans'; d.mkdir()
    Image.fromarray(np.dstack([CHEST] * 3 + [np.full_like(CHEST, 255)]), 'RGBA').save(d/'rgba.png')
    im = Image.fromarray((CHEST > 100).astype(np.uint8), 'P'); im.putpalette([30, 30, 30, 200, 200, 200]); im.save(d/'palette.png')
    Image.fromarray(CHEST.astype(np.uint16) * 100).save(d/'grey16.png')
    write_image(d/'tiny.png', size=(28, 28)); write_image(d/'wide.jpeg', size=(120, 300))
    write_dicom(d/'mono1.dcm', 4095 - STORED, 'MONOCHROME1')
    png_header_only(d/'huge.png', 100_000, 100_000)
    (d/'empty.jpeg').write_bytes(b'')
    (d/'notes.dcm').write_text('not a DICOM file')
    return d

def test_predict_reads_every_format_and_reports_the_rest(mixed_folder):
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16, 2))
    df = XrayPredictor(model, ['NORMAL', 'PNEUMONIA'], 32, (0.5, 0.25), device='cpu').predict(mixed_folder)
    bad = df[df.error.notna()]
    assert sorted(Path(p).name for p in bad.path) == ['empty.jpeg', 'huge.png', 'notes.dcm']
    assert all(Path(p).name in e for p, e in zip(bad.path, bad.error)) and 'too large' in bad.error[bad.path.str.endswith('huge.png')].item()
    assert len(df) == 9 and df[df.error.isna()].label.notna().sum() == 6

def test_training_on_a_folder_of_mixed_formats(mixed_folder, tmp_path):
    root = tmp_path/'data'
    for c in ('NORMAL', 'PNEUMONIA'):
        (root/c).mkdir(parents=True)
        for p in mixed_folder.iterdir(): (root/c/f'{c}-{p.name}').write_bytes(p.read_bytes())
    with pytest.warns(UnreadableImageWarning, match='skipped 6 unreadable image'):
        items = xray_items(root, max_bad=0.5)
    assert len(items) == 12
    dls = xray_dataloaders(items, size=32, bs=4, aug='none', valid_pct=0.34, cache=False)
    learn = xray_learner(dls, 'vgg', fast_precision=False, model_kwargs=dict(widths=(8, 16)))
    learn.fit(1, 1e-3, cbs=ShortEpochCallback(pct=1/len(dls.train), short_valid=False))
    assert len(learn.recorder.values) == 1

# EXIF orientation -> what a viewer does to the stored pixels (EXIF 2.3, tag 0x0112)
EXIF_VIEW = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.T, 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).T, 8: lambda a: np.rot90(a, 1)}

@settings(max_examples=40, deadline=None, derandomize=True)
@given(orientation=st.sampled_from(sorted(EXIF_VIEW)), h=st.integers(1, 12), w=st.integers(1, 12), seed=st.integers(0, 99))
def test_exif_orientation_is_applied(tmp_path_factory, orientation, h, w, seed):
    "The model sees what a viewer shows: the stored pixels turned as the EXIF orientation tag says"
    a = np.random.default_rng(seed).integers(0, 255, (h, w), dtype=np.uint8)
    exif = Image.Exif(); exif[0x0112] = orientation
    fn = tmp_path_factory.mktemp('exif')/'turned.png'
    Image.fromarray(a).save(fn, exif=exif)
    assert np.array_equal(load_xray(fn), EXIF_VIEW[orientation](a))

def test_exif_orientation_of_a_jpeg(tmp_path):
    exif = Image.Exif(); exif[0x0112] = 6
    Image.fromarray(CHEST).save(tmp_path/'phone.jpeg', exif=exif)
    assert load_xray(tmp_path/'phone.jpeg').shape == CHEST.shape[::-1]

def _over_limit_dicom(fn):
    "A DICOM whose header declares 20000 x 20000 pixels (tiny pixel data, as compressed data can be)"
    import pydicom
    write_dicom(fn, CHEST.astype(np.uint16))
    ds = pydicom.dcmread(fn); ds.Rows = ds.Columns = 20000; ds.save_as(fn)

@pytest.mark.parametrize('write,msg', [
    (lambda fn: Image.fromarray(np.array([[0, np.nan], [1, 2]], dtype=np.float32)).save(fn.with_suffix('.tif')),
     '1 of 4 pixel values are NaN or infinite'),
    (lambda fn: Image.fromarray(np.array([[0, np.inf], [-np.inf, 2]], dtype=np.float32)).save(fn.with_suffix('.tif')),
     '2 of 4 pixel values are NaN or infinite'),
    (lambda fn: Image.fromarray(np.full((4, 4), 700, dtype=np.uint16)).save(fn.with_suffix('.png')), 'a blank image: every pixel is 700'),
    (lambda fn: Image.fromarray(np.full((4, 4), 0.25, dtype=np.float32)).save(fn.with_suffix('.tif')), 'a blank image: every pixel is 0.25'),
    (lambda fn: write_dicom(fn.with_suffix('.dcm'), np.full((4, 4), 1000, dtype=np.uint16)), 'a blank image: every pixel is 1000'),
    (lambda fn: write_dicom(fn.with_suffix('.dcm'), CHEST.astype(np.uint16), window=(100, 0)), 'an empty display window [100, 100]'),
    (lambda fn: _over_limit_dicom(fn.with_suffix('.dcm')), 'too large to read safely: 400000000 pixels'),
])
def test_pixels_that_make_no_image_are_refused_by_name(tmp_path, write, msg):
    "Non-finite values, an empty range, an empty DICOM window, a DICOM over the pixel limit: an error naming the file, never a black image"
    write(tmp_path/'scan')
    fn = next(tmp_path.iterdir())
    with pytest.raises(XrayDataError, match=f"{fn.name}: ") as e: load_xray(fn, 32)
    assert msg in str(e.value)
    pred = XrayPredictor(nn.Sequential(nn.Flatten(), nn.Linear(32*32, 2)), ['NORMAL', 'PNEUMONIA'], 32, (0.5, 0.25), device='cpu')
    row = pred.predict(fn).iloc[0]
    assert row.label is None and msg in row.error
