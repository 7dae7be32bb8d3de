"""Speed of the metrics against the numpy reference loop and the XOR-popcount floor.

    python -m benchmarks.bench_metrics                 # CPU, both sizes, best of 3
    python -m benchmarks.bench_metrics --device cuda   # adds a "cuda" section to the same file

Ours is timed with 1 torch thread (like the single-threaded numpy reference and floor, so the
ratios compare like with like) and with all of torch's threads ("_all_threads" keys). On a
shared, oversubscribed machine the multi-threaded numbers can be far worse than the 1-thread
ones: OpenMP threads wait on each other whenever one of them is descheduled.

MIRFlickr size: 2,000 queries x 18,015 items x 64 bits x 24 labels (the real MIRFlickr labels
from ../shared/data when present: first 2,000 rows queries, the rest retrieval). NUS-WIDE size:
2,100 x 193,734 x 128 bits x 21 labels (synthetic labels), run in a child process so its peak
RSS is its own. Codes are sign(labels @ W + noise), so distances cluster the way trained codes
do. Results go to benchmarks/results/metrics.json and metrics.md; every time is a best of
--repeats, measured side by side in one process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

# The numpy reference and floor run single-threaded (numpy's BLAS too, set before numpy loads):
# a multi-threaded BLAS mat-vec per query only slows the reference on a shared machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import metrics  # noqa: E402
from metrics import reference  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MIRFLICKR_LABELS = ROOT.parent / "shared" / "data" / "mirflickr25k" / "mirflickr25k-lall.mat"


def best_of(repeats: int, fn, sync=lambda: None):
    """Return (best seconds, last result) over `repeats` calls."""
    best, result = float("inf"), None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, result


def correlated_codes(labels: np.ndarray, bits: int, noise: float, seed: int) -> np.ndarray:
    """±1 codes = sign(labels @ W + noise): items sharing labels get close codes."""
    rng = np.random.default_rng(seed)
    projection = rng.normal(size=(labels.shape[1], bits)).astype(np.float32)
    values = labels.astype(np.float32) @ projection + noise * rng.normal(size=(labels.shape[0], bits)).astype(np.float32)
    return np.where(values >= 0, 1.0, -1.0).astype(np.float32)


def mirflickr_problem(seed: int = 0):
    if MIRFLICKR_LABELS.is_file():
        import scipy.io

        labels = scipy.io.loadmat(MIRFLICKR_LABELS)["LAll"].astype(np.float32)
        source = f"real MIRFlickr-25K labels ({MIRFLICKR_LABELS.name})"
    else:
        labels = synthetic_labels(20015, 24, 3.8, seed)
        source = "synthetic labels (MIRFlickr file not found)"
    codes = correlated_codes(labels, 64, noise=2.5, seed=seed)
    return (codes[:2000], codes[2000:], labels[:2000], labels[2000:]), source


def synthetic_labels(n: int, n_labels: int, mean_labels: float, seed: int) -> np.ndarray:
    """Multi-hot rows with Zipf-like label frequencies and about `mean_labels` labels per row."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_labels + 1) ** 0.8
    rates = np.minimum(popularity / popularity.sum() * mean_labels, 0.95)
    labels = (rng.random((n, n_labels)) < rates).astype(np.float32)
    empty = labels.sum(1) == 0
    labels[empty, rng.choice(n_labels, size=empty.sum(), p=popularity / popularity.sum())] = 1  # >= 1 label each
    return labels


def popcount_floor(query: np.ndarray, retrieval: np.ndarray, chunk: int) -> int:
    """XOR + popcount of every query-item pair on bit-packed uint64 words (numpy); returns a checksum."""
    pack = lambda codes: np.packbits(codes > 0, axis=1).view(np.uint64)  # noqa: E731
    q, r = pack(query), pack(retrieval)
    checksum = 0
    for start in range(0, len(q), chunk):
        # one 64-bit word at a time: a reduction over a length-2 axis would cost more than the popcount
        distance = popcount(q[start: start + chunk, None, 0] ^ r[None, :, 0])
        for word in range(1, q.shape[1]):
            distance += popcount(q[start: start + chunk, None, word] ^ r[None, :, word])
        checksum += int(distance[:, 0].sum())
    return checksum


def popcount(words: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)  # byte LUT fallback
    return table[words.view(np.uint8)].reshape(*words.shape, 8).sum(-1, dtype=np.uint8)


def to_device(arrays, device):
    return [torch.from_numpy(a).to(device) for a in arrays]


def sync_for(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def with_threads(threads: int, fn):
    """fn run with torch at `threads` intra-op threads (restored afterwards)."""
    def run():
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(previous)
    return run


def interleaved_best(repeats: int, contenders: dict, sync) -> tuple[dict, dict]:
    """Time every contender once per round, `repeats` rounds; return (best seconds, last results).

    Round-robin rather than one contender after another, so a burst of load from other
    processes on a shared machine hits all of them alike.
    """
    best = {name: float("inf") for name in contenders}
    results = {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            seconds, results[name] = best_of(1, fn, sync)
            best[name] = min(best[name], seconds)
    return best, results


def our_contenders(tensors, threads: int, with_evaluate: bool) -> dict:
    """Our stable and tie-aware mAP (and evaluate_hashing) at 1 thread and, if > 1, at `threads`."""
    out = {}
    for suffix, n in (("", 1), ("_all_threads", threads)) if threads > 1 else (("", 1),):
        # The default path (the fused kernel on CPU where numba is installed) and the torch sort path.
        out[f"ours_stable_map_s{suffix}"] = with_threads(n, lambda: float(metrics.mean_average_precision(*tensors)))
        out[f"ours_stable_map_torch_s{suffix}"] = with_threads(
            n, lambda: float(metrics.mean_average_precision(*tensors, backend="torch")))
        out[f"ours_tie_aware_map_s{suffix}"] = with_threads(n, lambda: float(metrics.mean_average_precision(*tensors, ties="tie-aware")))
        if with_evaluate:
            out[f"ours_evaluate_hashing_s{suffix}"] = with_threads(n, lambda: metrics.evaluate_hashing(*tensors))
    return out


def stable_path(tensors) -> str:
    """Which implementation mean_average_precision(backend="auto") picks for these inputs."""
    from metrics import engine
    return "counting kernel (numba)" if engine.use_kernel(engine.problem(*tensors), "auto") else "torch backend"


def add_ratios(out: dict, reference_s: float, floor_s: float, threads: int, reference_all_threads_s: float | None = None) -> None:
    """Speed-ups over the reference and times over the floor; the all-threads ratios divide the
    faster of the reference's 1-thread and all-BLAS-threads times, when both were measured."""
    for suffix in ("", "_all_threads") if threads > 1 else ("",):
        stable_s, tie_s = out[f"ours_stable_map_s{suffix}"], out[f"ours_tie_aware_map_s{suffix}"]
        if suffix and reference_all_threads_s is not None:
            reference_s = min(reference_s, reference_all_threads_s)
        out |= {f"speedup_stable_vs_reference{suffix}": reference_s / stable_s,
                f"speedup_stable_torch_path_vs_reference{suffix}": reference_s / out[f"ours_stable_map_torch_s{suffix}"],
                f"speedup_tie_aware_vs_reference{suffix}": reference_s / tie_s,
                f"stable_over_popcount_floor{suffix}": stable_s / floor_s,
                f"tie_aware_over_popcount_floor{suffix}": tie_s / floor_s}


def bench_mirflickr(device: torch.device, repeats: int, threads: int) -> dict:
    problem, source = mirflickr_problem()
    tensors = to_device(problem, device)
    contenders = our_contenders(tensors, threads, with_evaluate=True)
    if device.type == "cpu":
        contenders["numpy_reference_loop_s"] = lambda: reference.reference_map(*problem)
        contenders["numpy_popcount_floor_s"] = lambda: popcount_floor(problem[0], problem[1], chunk=250)
    best, results = interleaved_best(repeats, contenders, sync_for(device))
    out = {"size": "2000 x 18015 x 64 bits x 24 labels", "labels": source, "device": str(device), "repeats": repeats}
    out |= best | {"map_stable": results["ours_stable_map_s"], "map_tie_aware": results["ours_tie_aware_map_s"],
                   "stable_path": stable_path(tensors)}
    if device.type == "cpu":
        out["stable_paths_agree"] = abs(results["ours_stable_map_torch_s"] - out["map_stable"]) < 1e-12
        out["stable_equals_reference"] = abs(results["numpy_reference_loop_s"] - out["map_stable"]) < 1e-12
        reference_all_threads_s = None
        if threads > 1:
            # The reference with numpy's BLAS on all threads too, so the all-threads ratio is
            # not ours on 2 cores against the reference on 1 (BLAS threads are fixed at import,
            # hence a child process; it runs after the round-robin, not inside it).
            reference_all_threads_s = reference_child(threads, repeats)
            out["numpy_reference_loop_s_blas_all_threads"] = reference_all_threads_s
        add_ratios(out, best["numpy_reference_loop_s"], best["numpy_popcount_floor_s"], threads, reference_all_threads_s)
    return out


def reference_child(threads: int, repeats: int) -> float:
    """Best time of the numpy reference loop at MIRFlickr size in a child whose BLAS uses `threads` threads."""
    env = os.environ | {name: str(threads) for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_metrics", "--reference-child", "--repeats", str(repeats)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"reference child failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(done.stdout.strip().splitlines()[-1])


def nus_child(device_name: str, repeats: int, threads: int) -> dict:
    """Runs in its own process: NUS-WIDE-sized problem, times and peak memory."""
    device = torch.device(device_name)
    labels = synthetic_labels(2100 + 193734, 21, 1.9, seed=1)
    codes = correlated_codes(labels, 128, noise=2.5, seed=1)
    problem = (codes[:2100], codes[2100:], labels[:2100], labels[2100:])
    del labels, codes
    tensors = to_device(problem, device)
    sync = sync_for(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = peak_rss_mib(reset=True)  # data generation's own peak is not ours
    contenders = our_contenders(tensors, threads, with_evaluate=False)
    if device.type == "cpu":
        contenders["numpy_popcount_floor_s"] = lambda: popcount_floor(problem[0], problem[1], chunk=25)
    best, results = interleaved_best(repeats, contenders, sync)
    out = {"size": "2100 x 193734 x 128 bits x 21 labels (synthetic)", "device": device_name, "repeats": repeats}
    out |= best | {"map_stable": results["ours_stable_map_s"], "map_tie_aware": results["ours_tie_aware_map_s"],
                   "stable_path": stable_path(tensors),
                   "stable_paths_agree": abs(results["ours_stable_map_torch_s"] - results["ours_stable_map_s"]) < 1e-12}
    out |= {"peak_rss_mib_data_generation": rss_before, "peak_rss_mib_timed_section": peak_rss_mib(),
            "data_mib": sum(t.numel() * t.element_size() for t in tensors) / 2**20}
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        # The reference loop would take minutes here: time it on the first 100 queries (checking
        # our per-query APs against it) and extrapolate linearly to 2,100.
        sub = (problem[0][:100], problem[1], problem[2][:100], problem[3])
        reference_s, reference_aps = best_of(1, lambda: reference.reference_average_precisions(*sub))
        ours = metrics.mean_average_precision(*[torch.from_numpy(a) for a in sub], per_query=True).numpy()
        out |= {"numpy_reference_loop_100_queries_s": reference_s,
                "numpy_reference_loop_extrapolated_s": reference_s * 21,
                "stable_equals_reference_on_100_queries": bool(np.abs(ours - reference_aps).max() < 1e-12)}
        add_ratios(out, reference_s * 21, best["numpy_popcount_floor_s"], threads)
    return out


def peak_rss_mib(reset: bool = False) -> float:
    """Peak resident size of this process (VmHWM); reset=True restarts the peak from now (Linux)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    peak = float(status["VmHWM"].split()[0]) / 1024 if "VmHWM" in status else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if reset:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
    return peak


def bench_nus(device: torch.device, repeats: int, threads: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_metrics", "--nus-child", "--device", str(device),
                           "--repeats", str(repeats), "--threads", str(threads)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"NUS-WIDE child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def environment(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
            "load_average_at_start": os.getloadavg(), "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


HEADLINES = (
    ("speedup_stable_vs_reference", "stable mAP@all: speed-up over the numpy reference loop (target >= 50x)"),
    ("speedup_stable_torch_path_vs_reference", "stable mAP@all, torch sort path (CUDA's): speed-up over the reference loop"),
    ("tie_aware_over_popcount_floor", "tie-aware mAP: time / XOR-popcount floor (target <= 5x)"),
    ("speedup_tie_aware_vs_reference", "tie-aware mAP: speed-up over the numpy reference loop"),
    ("stable_over_popcount_floor", "stable mAP@all: time / XOR-popcount floor"),
)


NOTES = """## How stable mAP@all gets its speed on CPU, and what was tried

- The torch path (also the CUDA path) sorts one unique int32 key 2n*distance + 2*index + relevant
  per pair: ~90 ms of distance matmul, ~200 ms of row sorts (numpy's AVX2 sort; torch.sort takes
  ~1.1 s, numpy's stable radix argsort of uint8 distances ~180 ms plus a gather) and ~100 ms of
  O(n) passes. That is ~4.5x the reference, 7x the popcount floor: the sort is the cost.
- Counting instead of sorting: the stable rank of item j at distance d is (items closer than d) +
  (items at d before j in database order) + 1. With torch/numpy primitives the second term is a
  one-hot cumsum over the live distance values or block histograms, each more element operations
  than the sort. As one fused loop it is a running counter per distance: metrics/fused.py (numba)
  makes one pass over the database per query, XOR + POPCNT, an AND for relevance, one counter
  update and one record store per pair, with four queries interleaved so their counter updates do
  not wait on each other, and query blocks spread over the threads. Per pair that is close to the
  floor's own cost, with no (query x item) temporaries at all.
- Tried on the way (1 thread, CPU time, MIRFlickr size): one query per pass with separate item
  and relevant counters 250 ms; two queries per pass with one packed counter per distance 90 ms;
  generic word loops instead of the one-word kernel 130 ms; float division per relevant item
  replaced by a reciprocal table. Four queries per pass kept for the one-word kernel (2, 4 and 8
  are within noise of each other).
- Then (session 3, 1 thread, kernel alone 68 -> ~52 ms): the final sum over a query's relevant
  items ran as one float chain (a third of the kernel, latency-bound); four partial sums and
  int64 instead of uint64 conversions cut it by a quarter. Code and label words side by side in
  one (items x 2) array, ~6 %. Counters start at distance << 48 so recording an item is a plain
  copy, ~6 %. Not kept: 32-bit records with the relevant count rebuilt per distance at the end
  (+15 %: that count is a store-to-load chain), fastmath vectorised gathers in the sum (+20 %).
- Input checks and packing went from ~9 ms to ~2 ms: one aminmax plus one numpy membership pass
  instead of several torch bool ops (torch's comparisons are ~5x slower than numpy's here), and
  packbits on rows widened to whole words (24-bit rows pack ~3x slower).
- Where it stands (2-core VM, best of 5, round-robin): MIRFlickr size ~34 ms on 2 threads
  (~62x the reference, whether numpy's BLAS has 1 thread or 2) and ~60 ms on 1 (~34x); NUS-WIDE
  size ~43-58x on 2 threads between runs. The per-pair loop is now ~12 instructions (XOR, POPCNT,
  AND, SETNE, counter load, record store, LEA, counter store, ...), about 3 cycles at the ~4
  instructions per cycle this core sustains: more would need a different algorithm. numba's
  set_num_threads is called only when the count changes, and the kernel leaves torch's thread
  count as the caller set it (numba's OpenMP pool start resets libgomp's). Timings on this VM
  vary by +-20 % between runs (noisy neighbours), hence best of 5 and ratios from one run.
- Tie-aware mAP needs only per-query (distance, relevant) counts: one addmm, one bincount, no
  sort; it meets its target (<= 5x the floor). Folding the labels into the addmm (bins by shared
  labels) to skip the relevance pass was slower (longer matmul).
- Fresh per-chunk temporaries cost page faults and let the resident size creep up to 2.1 GB at
  NUS-WIDE size; per-call reused buffers keep it near the data's own size.
- On an oversubscribed machine (other jobs on the same 2 cores) multi-threaded timings get
  worse, not better: threads wait on each other whenever one is descheduled. Run it quiet.
"""


def markdown(results: dict) -> str:
    lines = ["# Metrics speed (written by `python -m benchmarks.bench_metrics`)", "",
             "Best of the stated rounds; in each round every contender runs once (round-robin), so load",
             "from other processes on a shared machine hits all alike. Ours at 1 torch thread unless the",
             "key ends in `_all_threads`; the numpy reference and floor are single-threaded, and the",
             "reference is also timed with numpy's BLAS on all threads (`numpy_reference_loop_s_blas_all_threads`,",
             "MIRFlickr size): the all-threads speed-ups divide the faster of its two times.", ""]
    for device, section in results.items():
        lines += [f"## {device}: {section['environment'].get('gpu', section['environment']['machine'])}, "
                  f"{section['environment']['cpu_count']} CPUs, load average at start {section['environment']['load_average_at_start']}", ""]
        if "provenance" in section["environment"]:
            lines += [section["environment"]["provenance"], ""]
        for name, part in section.items():
            if name == "environment":
                continue
            lines += [f"### {name}: {part['size']}", ""]
            for key, text in HEADLINES:
                for suffix, label in (("", "1 thread"), ("_all_threads", "all threads")):
                    value = part.get(key + suffix, part.get(key + suffix + "_extrapolated"))
                    if value is not None:
                        lines.append(f"- {text}, {label}: **{value:.2f}**")
            lines += ["", "| measure | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in part.items() if k != "size"]
            lines.append("")
    return "\n".join(lines + [NOTES])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads for the '_all_threads' timings (1 skips them); default: torch's own")
    parser.add_argument("--skip-nus", action="store_true", help="only the MIRFlickr size")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for metrics.json / metrics.md")
    parser.add_argument("--nus-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reference-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reference_child:
        problem, _ = mirflickr_problem()
        print(best_of(args.repeats, lambda: reference.reference_map(*problem))[0])
        return 0
    if args.nus_child:
        print(json.dumps(nus_child(args.device, args.repeats, args.threads)))
        return 0
    device = torch.device(args.device)
    section = {"environment": environment(device), "mirflickr": bench_mirflickr(device, args.repeats, args.threads)}
    print(json.dumps(section["mirflickr"], indent=1), flush=True)
    if not args.skip_nus:
        section["nus_wide"] = bench_nus(device, args.repeats, args.threads)
        print(json.dumps(section["nus_wide"], indent=1))
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / "metrics.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[device.type] = section  # other devices' sections (e.g. a CUDA run elsewhere) are kept
    path.write_text(json.dumps(results, indent=1) + "\n")
    (args.results / "metrics.md").write_text(markdown(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
