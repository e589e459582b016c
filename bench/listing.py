"""Time and peak memory of reading a data folder of 1,000 to 100,000 entries as `xray-fastai train --data` does first.

Not a test. For each size, a folder in Kaggle's layout (train/ and test/, each with NORMAL/ and PNEUMONIA/, a quarter
of the entries in each) is generated under `--tmp` and deleted afterwards. `--kinds`: `png`, every entry the same
valid 8x8 PNG (so every one is decoded); `text`, every entry a 1-byte `.txt` file but one PNG per class folder (the
non-images are listed and reported, not decoded). Each measurement runs in a fresh Python process: `xray_items` with
`check=False` (the listing: names, labels, patients) and with `check=True` (every image decoded, what `train` and
`report` do), its seconds and its peak RSS (the kernel's
`VmHWM`, reset after the imports through `/proc/self/clear_refs`, Linux only) beside the RSS after the imports. Example:

    python bench/listing.py                       # bench/results/listing_cpu.csv|md
    python bench/listing.py --sizes 1000 --name listing_try
"""
import json, shutil, subprocess, sys, tempfile, time
from pathlib import Path
from fastcore.script import call_parse

MEASURE = """
import json, sys, time, warnings
from pathlib import Path
from xray_fastai.items import xray_items
from xray_fastai.images import xray_source
def status(key): return int(next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith(key)).split()[1])/1024
Path('/proc/self/clear_refs').write_text('5')  # the peak RSS (VmHWM) starts again from now: the imports' peak does not hide the listing's
base = status('VmRSS:')
t = time.perf_counter()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter('always')
    df = xray_items(xray_source(sys.argv[1]), check=sys.argv[2] == 'read')
print(json.dumps(dict(seconds=time.perf_counter() - t, rows=len(df), warnings=len(w), rss_after_import_mb=base, peak_rss_mb=status('VmHWM:'))))
"""
def tiny_png() -> bytes:
    "The bytes of one 8x8 grey PNG"
    import io, numpy as np
    from PIL import Image
    buf = io.BytesIO(); Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)*3).save(buf, 'PNG')
    return buf.getvalue()

def make_folder(root:Path, n:int, kind:str):
    "A Kaggle-layout folder of `n` entries in `root`"
    png = tiny_png()
    for split in ('train', 'test'):
        for label in ('NORMAL', 'PNEUMONIA'):
            d = root/split/label; d.mkdir(parents=True)
            for i in range(n//4):
                name = f'IM-{i:06d}-0001' if label == 'NORMAL' else f'person{i}_bacteria_{i}'
                if kind == 'png' or i == 0: (d/f'{name}.png').write_bytes(png)
                else: (d/f'{name}.txt').write_bytes(b'x')

@call_parse
def main(sizes:str='1000,10000,100000', # Numbers of entries, comma-separated
         kinds:str='png,text', # Folder contents (see above), comma-separated
         name:str='listing_cpu', # Results file name (bench/results/NAME.csv and .md)
         tmp:str='/tmp', # Where the folders are generated (and deleted)
        ):
    "Seconds and peak RSS of `xray_items` on generated folders, into bench/results/NAME.csv|md"
    from xray_fastai.experiments import ResultsWriter
    w = ResultsWriter(name, Path(__file__).parent/'results')
    for kind in kinds.split(','):
        for n in map(int, sizes.split(',')):
            root = Path(tempfile.mkdtemp(prefix='xray-listing-', dir=tmp))
            try:
                t = time.perf_counter(); make_folder(root, n, kind); made = time.perf_counter() - t
                for mode in ('list', 'read'):
                    res = subprocess.run([sys.executable, '-c', MEASURE, str(root), mode], capture_output=True, text=True)
                    if res.returncode: sys.exit(f"{kind} {n} {mode}: {res.stderr[-2000:]}")
                    r = json.loads(res.stdout.strip().splitlines()[-1])
                    row = dict(kind=kind, entries=n, mode=mode, rows=r['rows'], seconds=round(r['seconds'], 2),
                               rss_after_import_mb=round(r['rss_after_import_mb']), peak_rss_mb=round(r['peak_rss_mb']),
                               growth_mb=round(r['peak_rss_mb'] - r['rss_after_import_mb']), warnings=r['warnings'],
                               generate_seconds=round(made, 1))
                    w.add(row); print(row, flush=True)
            finally: shutil.rmtree(root, ignore_errors=True)
    print(w.write("Listing a data folder of many entries (`xray_items`, as `train --data` does first)",
                  "Generated Kaggle-layout folders, a quarter of the entries in each class folder; `png`: every entry an 8x8 PNG; "
                  "`text`: 1-byte .txt files but one PNG per class folder. `list`: `xray_items(check=False)`; `read`: "
                  "`check=True` (every image decoded, as `train` and `report` do). Each row in a fresh process: the peak RSS "
                  "is the kernel's `VmHWM`, reset after the imports (`/proc/self/clear_refs`); growth is the peak minus the RSS then."))
