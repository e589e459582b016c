"""The web demo's speed and size: start `xray-fastai demo` on a model folder, time its start-up (process start to the
first answered page) and one image's panels through `gradio_client` (median over --n images, after start-up), and the
size of what `train` adds to the folder for it (embeddings index and example images).

    python bench/demo.py MODEL_DIR --images DATA/test --n 20
"""
import argparse, os, socket, statistics, subprocess, sys, time
from pathlib import Path
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from xray_fastai.experiments import ResultsWriter
from xray_fastai.predict import image_files
from xray_fastai.demo import INDEX_CONFIG, INDEX_WEIGHTS, EXAMPLES

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def wait_for(url:str, proc, timeout:float=120) -> float:
    "Seconds until `url` answers 200"
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None: raise RuntimeError(f"the demo exited with {proc.returncode}")
        try:
            with urlopen(url, timeout=2) as r:
                if r.status == 200: return time.perf_counter() - start
        except OSError: time.sleep(0.05)
    raise TimeoutError(url)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('model_dir'); p.add_argument('--images', required=True, help='folder of images to analyse')
    p.add_argument('--n', type=int, default=20); p.add_argument('--name', default='demo')
    a = p.parse_args()
    w = ResultsWriter(a.name, ROOT/'bench'/'results')
    files = image_files(a.images)[::max(1, len(image_files(a.images)) // a.n)][:a.n]
    port = free_port()
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'PYTHONWARNINGS': 'ignore'}
    proc = subprocess.Popen([sys.executable, '-m', 'xray_fastai.cli', 'demo', a.model_dir, '--port', str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        startup = wait_for(f"http://127.0.0.1:{port}/", proc)
        from gradio_client import Client, handle_file
        client = Client(f'http://127.0.0.1:{port}/', verbose=False)
        secs, labels, unlike = [], [], 0
        for f in files:
            s = time.perf_counter()
            r = client.predict(handle_file(str(f)), api_name='/analyse')
            secs.append(time.perf_counter() - s); labels.append(r[0]); unlike += 'Unlike the training collection' in r[2]
        assert all(labels), "every image got a label"
    finally:
        proc.terminate(); proc.wait(30)
    d = Path(a.model_dir)
    index_mb = sum((d/f).stat().st_size for f in (INDEX_WEIGHTS, INDEX_CONFIG)) / 2**20
    examples_mb = sum(f.stat().st_size for f in (d/EXAMPLES).iterdir()) / 2**20
    row = dict(startup_s=round(startup, 2), median_s_per_image=round(statistics.median(secs), 3),
               max_s_per_image=round(max(secs), 3), n_images=len(secs), n_warned_unlike=unlike, index_mb=round(index_mb, 2),
               examples_mb=round(examples_mb, 3), added_mb=round(index_mb + examples_mb, 2))
    w.add(row)
    print(w.write('The web demo: start-up, one image with every panel, index size',
                  f"`xray-fastai demo {a.model_dir}` in a subprocess: start-up is the time from starting the process to the "
                  f"first answered page; each image is one `gradio_client` call of `/analyse` (all panels, over HTTP), "
                  f"{len(secs)} images of {a.images} after start-up (n_warned_unlike: how many got the out-of-collection warning). Targets: start-up <= 10 s, median <= 1 s per image, "
                  "index <= 5 MB."))

if __name__ == '__main__': main()
