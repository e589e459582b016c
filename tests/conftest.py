import contextlib, os
from pathlib import Path
import numpy as np, pytest
from PIL import Image

os.environ.setdefault('MPLBACKEND', 'agg')

def write_image(path:Path, size=(32, 32), seed=0):
    "A small grey JPEG (or PNG, by suffix) at `path`"
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)
    Image.fromarray(a).convert('RGB').save(path)
    return path

@pytest.fixture
def kaggle_dir(tmp_path):
    "A tiny Kaggle-layout folder: 12 normal, 8 bacteria, 8 virus images per split"
    root = tmp_path/'chest_xray'
    for split in ('train', 'test'):
        for i in range(12): write_image(root/split/'NORMAL'/f'IM-{i:04d}-0001.jpeg', seed=i)
        for i in range(8):
            write_image(root/split/'PNEUMONIA'/f'person{i}_bacteria_{i}.jpeg', seed=100+i)
            write_image(root/split/'PNEUMONIA'/f'person{50+i}_virus_{i}.jpeg', seed=200+i)
    return root

@pytest.fixture
def real_data():
    "The real data set, when `XRAY_DATA` points at it"
    p = os.environ.get('XRAY_DATA')
    if not p or not Path(p).is_dir(): pytest.skip('XRAY_DATA is not set')
    return Path(p)

chromium, chromedriver = Path('/usr/bin/chromium'), Path('/usr/bin/chromedriver')

def need_browser():
    "Skip without headless Chromium, its driver and selenium; under CI, fail instead"
    missing = [str(p) for p in (chromium, chromedriver) if not p.exists()]
    try: import selenium
    except ImportError: missing.append('selenium (pip)')
    if not missing: return
    msg = f"the browser test needs {', '.join(missing)}: apt-get install chromium chromium-driver; pip install -e '.[dev]'"
    if os.environ.get('CI', '').lower() in ('1', 'true', 'yes'): pytest.fail(msg)
    pytest.skip(msg)

@contextlib.contextmanager
def chromium_driver():
    "A headless Chromium under selenium, with a fresh profile (chromedriver makes one when none is given) and its console log kept"
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(chromium)
    for a in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-dev-shm-usage',
              '--disable-background-networking', '--disable-component-update', '--disable-sync', '--window-size=1280,900'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(options=opts, service=Service(str(chromedriver)))
    try: yield driver
    finally: driver.quit()
