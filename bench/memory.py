"""Peak memory of a command and of the processes it starts (DataLoader workers), against a 4 GiB budget.

Not a test. Samples the process tree every second (psutil): the sum of RSS counts pages shared between the main
process and its forked workers once per process, the sum of PSS splits them, so the truth lies near the PSS sum.
The largest single process's exact peak RSS comes from the kernel when the command ends. With `--name NAME` first, the
result also goes to bench/results/NAME.csv and NAME.md (with the command and the hardware). Example:

    python bench/memory.py python -m xray_fastai.cli train --data ../shared/data/chest_xray --epochs 1
    python bench/memory.py --name memory_cpu python -m xray_fastai.cli train --data ../shared/data/chest_xray --epochs 1
"""
import resource, subprocess, sys, time
try: import psutil
except ImportError: sys.exit("bench/memory.py needs psutil: pip install psutil")

def main(cmd:list):
    name, start = None, time.perf_counter()
    if cmd[:1] == ['--name']: name, cmd = cmd[1], cmd[2:]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc, peak_rss, peak_pss, n = psutil.Process(p.pid), 0, 0, 0
    while p.poll() is None:
        rss = pss = 0
        try: ps = [proc] + proc.children(recursive=True)
        except psutil.NoSuchProcess: break
        for q in ps:
            try: mi = q.memory_full_info(); rss += mi.rss; pss += mi.pss
            except (psutil.NoSuchProcess, psutil.AccessDenied): pass
        peak_rss, peak_pss, n = max(peak_rss, rss), max(peak_pss, pss), max(n, len(ps))
        time.sleep(1)
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    print(f"exit {p.returncode}; largest process: peak RSS {largest/2**30:.2f} GiB; process tree (up to {n} processes, "
          f"sampled each second): peak sum of RSS {peak_rss/2**30:.2f} GiB, peak sum of PSS {peak_pss/2**30:.2f} GiB")
    if name:  # the toolkit is imported only now: processes its import starts must not count as the command's children
        from pathlib import Path
        from xray_fastai.experiments import ResultsWriter
        w = ResultsWriter(name, Path(__file__).parent/'results', start=start)
        w.add(dict(measured=' '.join(cmd), exit=p.returncode, processes=n, largest_peak_rss_gib=round(largest/2**30, 2),
                   peak_rss_sum_gib=round(peak_rss/2**30, 2), peak_pss_sum_gib=round(peak_pss/2**30, 2)))
        print(w.write(f"Peak memory ({name})", "Largest process: the kernel's peak RSS; process tree: sampled each second."))
    return p.returncode

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
