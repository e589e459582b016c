"The web demo (`xray-fastai demo`): its API through `gradio_client`, its page in headless Chromium, and its errors."
import json, os, shutil, socket, struct, time, zlib
from pathlib import Path
import numpy as np, pytest
from xray_fastai.cli import main
from conftest import chromium_driver

pytest.importorskip('gradio', reason='the demo needs Gradio: pip install -e ".[demo]"')

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    "A classifier trained by `xray-fastai train` on 80 phantoms for one epoch at 32 px, plus a tiny healthy-lung detector"
    from xray_fastai.phantoms import make_phantoms
    from xray_fastai.anomaly import anomaly_learner, fit_timed
    from xray_fastai.demo import save_detector
    tmp = tmp_path_factory.mktemp('demo')
    make_phantoms(tmp/'data', 80, 24, 64, 0)
    assert main(['train', '--data', tmp/'data', '--size', 32, '--epochs', 1, '--bs', 16, '--aug', 'none', '--out', tmp/'model']) == 0
    ae = anomaly_learner(tmp/'data', size=32, bs=16, aug='none', widths=(8, 16), latent=4, fast_precision=False)
    fit_timed(ae, 1, 3e-3)
    save_detector(ae.model, tmp/'model', ae.dls)
    return tmp/'model'

@pytest.fixture(scope='module')
def app_url(model_dir):
    from xray_fastai.demo import demo_app
    app = demo_app(model_dir)
    port = free_port()
    app.launch(server_name='127.0.0.1', server_port=port, prevent_thread_lock=True, quiet=True,
               allowed_paths=[str(model_dir/'examples')])
    yield f'http://127.0.0.1:{port}/'
    app.close()

@pytest.fixture(scope='module')
def client(app_url):
    from gradio_client import Client
    return Client(app_url, verbose=False)

def analyse(client, path):
    from gradio_client import handle_file
    return client.predict(handle_file(str(path)), api_name='/analyse')

def test_train_saves_a_small_index_and_examples(model_dir):
    from xray_fastai.demo import load_embedding_index, INDEX_CONFIG, INDEX_WEIGHTS
    idx = load_embedding_index(model_dir)
    cfg = json.loads((model_dir/'config.json').read_text())
    assert idx.vocab == cfg['vocab'] and len(idx) == cfg['training']['n_train'] and 0 < idx.threshold < 2
    assert len(list((model_dir/'examples').glob('*.jpeg'))) == 4
    assert (model_dir/INDEX_WEIGHTS).stat().st_size + (model_dir/INDEX_CONFIG).stat().st_size < 1 << 20

def test_client_gets_every_panel(client, model_dir):
    img = sorted((model_dir/'examples').glob('*.jpeg'))[0]
    label, probs, details, overlay, gallery = analyse(client, img)
    assert label in ('NORMAL', 'PNEUMONIA') and {c['label'] for c in probs['confidences']} == {'NORMAL', 'PNEUMONIA'}
    assert sum(c['confidence'] for c in probs['confidences']) == pytest.approx(1, abs=1e-5)
    assert f'### {label}' in details and 'Healthy-lung detector:** reconstruction error' in details and 'training collection' in details
    from PIL import Image
    assert Image.open(overlay).size == (320, 320)
    assert len(gallery) == 6 and all(g['caption'].split(' · ')[0] in ('NORMAL', 'PNEUMONIA') for g in gallery)

def test_a_training_image_finds_itself_first(model_dir):
    from xray_fastai.demo import DemoModel
    m = DemoModel(model_dir)
    name = m.index.names[0]
    res = m.analyse(next((model_dir.parent/'data'/'train').rglob(name)))
    assert res['neighbours'][0][1].endswith(f"{name} · 0.000") and res['distance'] < 1e-3 and res['ood'] is False

def png_header_only(path:Path, width:int, height:int) -> Path:
    "A PNG that declares `width` x `height` pixels but holds almost no data, as a decompression bomb would"
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))
    return path

def dicom_without_pixels(path:Path) -> Path:
    import pydicom
    from xray_fastai.images import write_dicom
    write_dicom(path, np.full((8, 8), 1000, np.uint16) + np.arange(64, dtype=np.uint16).reshape(8, 8))
    ds = pydicom.dcmread(path); del ds.PixelData; ds.save_as(path)
    return path

@pytest.mark.parametrize('make, msg', [
    (lambda d: (d/'notes.png').write_text('not an image') and d/'notes.png', 'not a readable image'),
    (lambda d: png_header_only(d/'huge.png', 100_000, 100_000), 'too large to read safely'),
    (lambda d: dicom_without_pixels(d/'empty.dcm'), 'not a readable DICOM image'),
])
def test_bad_files_get_a_short_message_and_the_server_goes_on(client, model_dir, tmp_path, make, msg):
    label, probs, details, overlay, gallery = analyse(client, make(tmp_path))
    assert (label, overlay, gallery) == ('', None, []) and details.startswith('**This file cannot be analysed:**')
    assert msg in details and 'Traceback' not in details and len(details) < 400 and str(tmp_path) not in details
    assert analyse(client, sorted((model_dir/'examples').glob('*.jpeg'))[0])[0] in ('NORMAL', 'PNEUMONIA')  # still answering

@pytest.mark.parametrize('damage, msg', [
    (lambda d: (d/'config.json').write_text('{"format": "xray_fastai.model"'), 'config.json: not valid JSON'),
    (lambda d: (d/'model.safetensors').write_bytes(b'\0' * 64), 'model.safetensors'),
    (lambda d: (d/'neighbours.safetensors').write_bytes(b'\0' * 64), 'neighbours.safetensors: not a readable safetensors file'),
    (lambda d: (d/'anomaly'/'model.safetensors').write_bytes(b'\0' * 64), 'not the weights detector.json records'),
])
def test_a_model_folder_failing_the_checks_is_one_line_and_exit_2(model_dir, tmp_path, capsys, damage, msg):
    bad = tmp_path/'model'
    shutil.copytree(model_dir, bad)
    damage(bad)
    capsys.readouterr()
    assert main(['demo', bad, '--port', free_port()]) == 2
    err = capsys.readouterr().err
    assert err.startswith('xray-fastai demo: error: ') and err.count('\n') == 1 and msg in err, err

def test_help_says_where_it_serves():
    import subprocess, sys
    res = subprocess.run([sys.executable, '-m', 'xray_fastai.cli', 'demo', '--help'], capture_output=True, text=True,
                         env={**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1])})
    assert res.returncode == 0 and '--host' in res.stdout and '127.0.0.1' in res.stdout and '--port' in res.stdout

@pytest.fixture(scope='module')
def browser():
    with chromium_driver() as driver: yield driver

def test_the_page_in_chromium_shows_the_label_and_the_overlay(browser, app_url, model_dir):
    "Upload a phantom test image as a user would, then read the label box and check the overlay image has loaded"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(app_url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#upload input[type=file]'))
    assert 'teaching tool, not a diagnosis' in browser.find_element(By.TAG_NAME, 'body').text
    img = sorted((model_dir.parent/'data'/'test').rglob('*.jpeg'))[0]
    browser.find_element(By.CSS_SELECTOR, '#upload input[type=file]').send_keys(str(img))
    label = wait.until(lambda d: d.execute_script("const t = document.querySelector('#label textarea, #label input'); return t && t.value"))
    assert label in ('NORMAL', 'PNEUMONIA')
    shown = wait.until(lambda d: d.execute_script(
        "const i = document.querySelector('#overlay img'); return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null"))
    assert shown == [320, 320]
    assert f'{label}' in browser.find_element(By.CSS_SELECTOR, '#details').text
    browser.save_screenshot(str(Path('test-artefacts').resolve().mkdir(exist_ok=True) or Path('test-artefacts')/'demo.png'))
