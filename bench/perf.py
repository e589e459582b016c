"""Benchmark: where a training step's time goes, on one model and one data set, as images/s and ratios.

Not a test. In one run, on the same `vgg` model and the same data, it measures training images/s of

- the data pipeline alone (fetch, collate, batch augmentation, normalisation), and its batch transforms one by one;
- a plain PyTorch loop and fastai's loop on the same pre-made batches (model compute alone, and fastai's overhead);
- fastai's loop on the live data pipeline (a full epoch, cut to `--batches` batches);
- each of those in float32 and in the CPU bf16 + channels_last path (`Learner.to_fast_precision`);
- inference (`Learner.get_preds`) in both precisions.

Absolute times drift on shared machines, so it interleaves the measurements, keeps the best of `--repeats` rounds
and prints ratios. On a machine shared with other jobs, `--threads 1 --clock cpu` (CPU seconds of the main process:
the batch transforms and the model, not the DataLoader workers) keeps them steady. Results go to
bench/results/NAME.csv (images/s) and NAME.md (with the command and the hardware). Example:

    XRAY_DATA=../shared/data/chest_xray python bench/perf.py --size 128 --bs 64 --batches 10 --threads 1 --clock cpu
"""
import shlex, sys, time
from pathlib import Path
import pandas as pd, torch
from fastcore.script import call_parse
from fastai.basics import *
from fastai.callback.all import *
from xray_fastai.data import xray_dataloaders; from xray_fastai.images import xray_source
from xray_fastai.models import xray_model
from xray_fastai.learner import xray_learner
from xray_fastai.experiments import ResultsWriter

CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}
now = CLOCKS['wall']  # the clock that `--clock` picks

class StepClock(Callback):
    "Time training batches `warmup` to `warmup+n` (data loading included), then stop the fit"
    order = 100  # after every other callback's `after_batch`
    def __init__(self, warmup:int, n:int): store_attr()
    def after_batch(self):
        if not self.training: return
        if self.iter == self.warmup-1: self.start = now()
        if self.iter == self.warmup+self.n-1:
            self.seconds = now() - self.start
            raise CancelFitException

def timed_batches(batches, warmup:int, n:int, step=noop) -> float:
    "Seconds to draw `n` batches from `batches` and `step` each, after `warmup` untimed ones"
    for i, b in enumerate(batches):
        step(b)
        if i == warmup-1: start = now()
        if i == warmup+n-1: return now() - start
    raise ValueError(f"only {i+1} batches; need {warmup+n}")

def plain_step(model:nn.Module, fast_precision:bool):
    "One plain PyTorch training step on a batch: AdamW as fastai's `Adam` defaults, bf16 autocast + channels_last if `fast_precision`"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)
    loss_func = nn.CrossEntropyLoss()
    if fast_precision: model.to(memory_format=torch.channels_last)
    model.train()
    def step(b):
        x, y = b
        if fast_precision: x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=fast_precision): loss = loss_func(model(x).float(), y)
        loss.backward(); opt.step(); opt.zero_grad()
    return step

def bench_learner(dls:DataLoaders, fast_precision:bool, batches:DataLoaders=None) -> Learner:
    "The CLI's classifier on `dls` (trained on `batches` if given), without the best-epoch checkpoint: a cut epoch has no validation"
    set_seed(0)
    learn = xray_learner(dls, fast_precision=fast_precision)
    learn.remove_cbs([SaveModelCallback, ProgressCallback])
    if batches is not None: learn.dls = batches
    return learn

def fastai_seconds(learn:Learner, warmup:int, n:int) -> float:
    "Seconds of `n` training batches of `learn.fit`"
    timer = StepClock(warmup, n)
    learn.fit(1, 1e-3, cbs=timer)
    return timer.seconds

def tfm_seconds(dl:TfmdDL, raw:list) -> dict:
    "Seconds each batch transform of `dl` takes over the raw (uint8, collated) batches `raw`"
    res = {}
    for b in raw:
        for f in dl.after_batch.fs:
            start = now()
            b = f(b)
            res[type(f).__name__] = res.get(type(f).__name__, 0.) + now() - start
    return res

@call_parse
def main(size:int=128, # Image side in pixels
         bs:int=64, # Batch size
         batches:int=20, # Timed batches per measurement
         warmup:int=3, # Untimed batches before each measurement
         repeats:int=2, # Rounds of all measurements; the best of each is kept
         aug:str='report', # Augmentation preset
         data:str=None, # Data folder; $XRAY_DATA, else the built-in phantoms
         name:str='perf_cpu', # Results file name under bench/results; '' writes nothing
         threads:int=0, # torch threads; 0 keeps torch's default. 1 is steadier on a machine shared with other jobs
         clock:str='wall', # 'wall' seconds, or 'cpu' seconds of this process: steady on a shared machine, but without DataLoader workers
        ):
    "Training and inference images/s of the data pipeline, plain PyTorch and fastai, in fp32 and bf16 + channels_last"
    if threads: torch.set_num_threads(threads)
    globals()['now'] = CLOCKS[clock]
    env = f"XRAY_DATA={os.environ['XRAY_DATA']} " if 'XRAY_DATA' in os.environ else ''
    w = ResultsWriter(name, Path(__file__).parent/'results', command=env + shlex.join(['python', 'bench/perf.py', *sys.argv[1:]]))
    torch.manual_seed(0)
    dls = xray_dataloaders(xray_source(data), size=size, bs=bs, aug=aug)
    need = warmup + batches
    if len(dls.train) < need: raise SystemExit(f"only {len(dls.train)} training batches; lower --batches or --bs")
    it = iter(dls.train); premade = [next(it) for _ in range(need)]; del it
    raw_dl = dls.train.new(after_batch=[])
    it = iter(raw_dl); raw = [next(it) for _ in range(batches)]; del it
    valid = dls.valid.items.iloc[:need*bs]
    infer_dl = dls.test_dl(valid, with_labels=True, bs=bs)
    plain = [tuple(t.as_subclass(Tensor) for t in b) for b in premade]  # what a PyTorch DataLoader would give
    replay = DataLoaders(premade, premade[:1])  # a `Learner` trains on any lists of batches
    best = {}
    def keep(key, seconds):
        best[key] = min(best.get(key, float('inf')), seconds)
        print(f"  {key}: {bs*batches/seconds:.0f} images/s", file=sys.stderr, flush=True)
    for r in range(repeats):
        keep('data pipeline alone', timed_batches(dls.train, warmup, batches))
        for t, s in tfm_seconds(dls.train, raw).items(): keep(f'  batch transform: {t}', s)
        for fast_precision in (False, True):
            p = 'bf16' if fast_precision else 'fp32'
            set_seed(0)
            keep(f'{p}|plain PyTorch loop, pre-made batches', timed_batches(plain, warmup, batches, plain_step(xray_model(), fast_precision)))
            keep(f'{p}|fastai loop, pre-made batches', fastai_seconds(bench_learner(dls, fast_precision, replay), warmup, batches))
            keep(f'{p}|fastai loop, live data pipeline (full epoch)', fastai_seconds(bench_learner(dls, fast_precision), warmup, batches))
            learn = bench_learner(dls, fast_precision)
            start = now(); learn.get_preds(dl=infer_dl); s = now() - start
            keep(f'{p}|inference (get_preds, live pipeline)', s * batches / len(infer_dl))
        print(f"round {r+1}/{repeats} done", file=sys.stderr)
    ips = {k: bs*batches/s for k, s in best.items()}
    rows = {}
    for k, v in ips.items():
        p, what = k.split('|') if '|' in k else ('', k)
        rows.setdefault(what, {})['fp32' if p != 'bf16' else 'bf16 + channels_last'] = v
    table = pd.DataFrame(rows).T.reindex(columns=['fp32', 'bf16 + channels_last']).round(0)
    def g(p, what): return ips[f'{p}|{what}']
    plain, fa, full = 'plain PyTorch loop, pre-made batches', 'fastai loop, pre-made batches', 'fastai loop, live data pipeline (full epoch)'
    ratios = {}
    for p in ('fp32', 'bf16'):
        ratios[f'{p}: fastai loop overhead vs plain PyTorch (target <= 10%)'] = f"{g(p, plain)/g(p, fa) - 1:+.1%}"
        ratios[f'{p}: full epoch time / model-only time (target <= 1.2)'] = f"{g(p, fa)/g(p, full):.2f}"
        ratios[f'{p}: data pipeline alone / model alone, in images/s'] = f"{ips['data pipeline alone']/g(p, fa):.2f}"
    for what in (plain, fa, full, 'inference (get_preds, live pipeline)'):
        ratios[f'bf16 + channels_last speed-up: {what}'] = f"{g('bf16', what)/g('fp32', what):.2f}x"
    ratios = pd.Series(ratios, name='ratio').to_frame()
    src = 'the built-in phantoms' if data is None and 'XRAY_DATA' not in os.environ else str(xray_source(data))
    about = (f"Data: {src}, {size} px, batch size {bs}, augmentation '{aug}'; model `vgg` (widths 16-32-64-128); "
             f"{batches} timed batches after {warmup} warm-up ones, best of {repeats} interleaved rounds, {clock} clock.")
    tables = {"Images/s (training unless said otherwise; batch transforms: images/s of that transform alone)": table,
              "Ratios": ratios}
    if not name: return print(about, *(f"{k}:\n{t.to_string()}" for k, t in tables.items()), sep='\n\n')
    w.add(table.rename_axis('measurement').reset_index())
    print(w.write(f"Training and inference speed ({name})", about, tables))
