"""`xray-fastai report --full` on one GPU, timed: the course's tasks end to end (1a, 1b, the test shift, 2 embeddings,
3 anomaly detection, 4 Grad-CAM) at the `full` preset (224 px classifiers, the 160-epoch synthetic-opacity detector).

Not a test. A thin driver of `report.report`, for one device lease: it writes the report folder into `--out` and, beside
it, `results.json` and `results.md` (the device, the command, each stage's seconds and the headline numbers):

    XRAY_DATA=/path/to/chest_xray python bench/gpu_pipeline.py --out $OUT
    python bench/gpu_pipeline.py --quick --out /tmp/gpu-smoke   # a smoke test on a CPU (phantoms without XRAY_DATA)
"""
import json, shlex, sys, time
from pathlib import Path
from fastcore.script import call_parse
from xray_fastai.core import hardware
from xray_fastai.report import report, STAGES

def headline(m:dict) -> dict:
    "The numbers a GPU run is judged by, from the report's metrics.json"
    picked = next(r for r in m['anomaly']['table'] if r['variant'] == m['anomaly']['picked'])
    return dict(binary_test_accuracy=m['binary']['test_accuracy'], binary_test_roc_auc=m['binary']['test_roc_auc'],
                multiclass_test_accuracy=m['multiclass']['test_accuracy'], anomaly_picked=m['anomaly']['picked'],
                anomaly_test_auroc=picked['test_auroc'], pointing_test_hit=m['explain']['pointing_game']['test_hit'])

@call_parse
def main(out:str='gpu_report', # The report folder; results.json and results.md go beside its files
         data:str=None, # Data (see `xray_source`); default $XRAY_DATA, else the built-in phantoms
         quick:bool=False, # A smoke test: 20 images per class and split, 64 px, one epoch of everything
        ):
    quick_kw = dict(n=20, size=64, epochs=1, ae_epochs=1, opacity_epochs=1, anomaly_size=64, bs=8) if quick else {}
    start = time.perf_counter()
    r = report(data, out=out, full=not quick, overwrite=True, **quick_kw)
    m = r['metrics']
    res = dict(device=hardware(), command='python bench/gpu_pipeline.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:]),
               total_seconds=round(time.perf_counter() - start, 1), stage_seconds={n: round(m[n]['seconds'], 1) for n in STAGES},
               **headline(m))
    out = Path(out)
    (out/'results.json').write_text(json.dumps(res, indent=1))
    (out/'results.md').write_text(f"# report --full, timed\n\n{res['device']}\n\n`{res['command']}`: {res['total_seconds']:.0f} s\n\n"
                                  + '\n'.join(f"- {k}: {v}" for k, v in res.items() if k not in ('device', 'command', 'total_seconds')) + '\n')
    print(json.dumps(res, indent=1))
