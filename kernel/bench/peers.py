#!/usr/bin/env python3
"""Side-by-side comparison of Valori's HNSW with hnswlib and faiss (IndexHNSWFlat).

Runs the same data set through all three in one run and prints build throughput, single-thread
QPS at recall@10 of 0.95 and 0.99, filtered recall and QPS at 10% selectivity, and memory.

    pip install hnswlib faiss-cpu numpy
    python3 kernel/bench/peers.py --synthetic 100000            # SIFT-shaped synthetic set
    python3 kernel/bench/peers.py --lowrank 200000 --dim 768    # the shape of real embeddings
    python3 kernel/bench/peers.py --dataset ../shared/data/textdev10k
    python3 kernel/bench/peers.py --synthetic 100000 --vectors-on-disk  # Valori's vectors in mapped files

Valori's figures come from its own benchmark programs (bench_recall, bench_filter), which also
write the synthetic set (with exact ground truth and tags) for the peers to read.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EFS = [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    rows = raw.reshape(-1, dim + 1)[:, 1:]
    return np.ascontiguousarray(rows.view(dtype))


def rss(field="VmRSS:"):
    """The resident set (or, with field "RssAnon:", its private memory) of this process, bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def run_valori(binary, source, queries, threads, extra):
    cmd = ["cargo", "run", "--quiet", "--release", "--bin", binary, "--"] + source + [
        "--queries", str(queries), "--threads", str(threads), "--json"] + extra
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def best_of_3(fn):
    """Runs fn three times; returns (result, fastest seconds), as Valori's benchmarks do."""
    best, out = float("inf"), None
    for _ in range(3):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def recall10(found, truth):
    hits = 0
    for f, t in zip(found, truth):
        hits += len(set(int(x) for x in f[:10]) & set(int(x) for x in t[:10]))
    return hits / (10 * len(truth))


def at_recall(runs, target):
    """QPS of the cheapest run reaching the target recall@10 (None if none does)."""
    ok = [r for r in runs if r["recall_at_10"] >= target]
    return max(ok, key=lambda r: r["qps"]) if ok else None


def bench_hnswlib(base, queries, truth, threads, tags, tag_truth):
    import hnswlib
    r0, p0 = rss(), rss("RssAnon:")
    index = hnswlib.Index(space="l2", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=16, ef_construction=200, random_seed=100)
    index.set_num_threads(threads)
    t = time.perf_counter()
    index.add_items(base, np.arange(len(base)))
    build = time.perf_counter() - t
    mem, private = rss() - r0, rss("RssAnon:") - p0
    index.set_num_threads(1)
    runs = []
    for ef in EFS:
        index.set_ef(ef)
        (labels, _), secs = best_of_3(lambda: index.knn_query(queries, k=10, num_threads=1))
        runs.append({"ef": ef, "recall_at_10": recall10(labels, truth), "qps": len(queries) / secs})
    filtered = []
    if tags is not None:
        for ef in EFS:
            index.set_ef(ef)
            def run():
                return [index.knn_query(q, k=10, num_threads=1, filter=lambda i: tags[i] == 0)[0][0]
                        for q in queries]
            found, secs = best_of_3(run)
            filtered.append({"ef": ef, "recall_at_10": recall10(found, tag_truth), "qps": len(queries) / secs})
            if filtered[-1]["recall_at_10"] >= 0.995:
                break
    return {"build_vps": len(base) / build, "memory": mem, "private": private, "runs": runs, "filtered": filtered}


def bench_faiss(base, queries, truth, threads, tags, tag_truth):
    import faiss
    r0, p0 = rss(), rss("RssAnon:")
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexHNSWFlat(base.shape[1], 16)
    index.hnsw.efConstruction = 200
    t = time.perf_counter()
    index.add(base)
    build = time.perf_counter() - t
    mem, private = rss() - r0, rss("RssAnon:") - p0
    faiss.omp_set_num_threads(1)
    runs = []
    for ef in EFS:
        index.hnsw.efSearch = ef
        (_, labels), secs = best_of_3(lambda: index.search(queries, 10))
        runs.append({"ef": ef, "recall_at_10": recall10(labels, truth), "qps": len(queries) / secs})
    filtered = []
    if tags is not None:
        ids = np.nonzero(tags == 0)[0].astype(np.int64)
        sel = faiss.IDSelectorBatch(ids)
        for ef in EFS:
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
            (_, labels), secs = best_of_3(lambda: index.search(queries, 10, params=params))
            filtered.append({"ef": ef, "recall_at_10": recall10(labels, tag_truth), "qps": len(queries) / secs})
            if filtered[-1]["recall_at_10"] >= 0.995:
                break
    return {"build_vps": len(base) / build, "memory": mem, "private": private, "runs": runs, "filtered": filtered}


def fmt_at(runs, target):
    r = at_recall(runs, target)
    return "not reached" if r is None else f"{r['qps']:8.0f} (ef {r['ef']}, {r['recall_at_10']:.3f})"


def fmt_filtered(runs, target=0.99):
    r = at_recall(runs, target)
    if r is None:
        best = max(runs, key=lambda r: r["recall_at_10"]) if runs else None
        return "n/a" if best is None else f"max {best['recall_at_10']:.3f} at {best['qps']:.0f}/s"
    return f"{r['recall_at_10']:.3f} at {r['qps']:8.0f}/s (ef {r['ef']})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic", type=int)
    ap.add_argument("--lowrank", type=int, help="low-rank clustered unit vectors (see --dim)")
    ap.add_argument("--dim", type=int, help="dimension of a generated set")
    ap.add_argument("--dataset")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vectors-on-disk", action="store_true",
                    help="Valori keeps its full-precision vectors in mapped files (the node's --vectors-on-disk)")
    a = ap.parse_args()
    if [a.synthetic, a.lowrank, a.dataset].count(None) != 2:
        ap.error("give --synthetic N, --lowrank N or --dataset DIR")
    if a.dim is not None and a.dataset is not None:
        ap.error("--dim applies to a generated set")
    efs = ",".join(map(str, EFS))
    with tempfile.TemporaryDirectory() as tmp:
        if a.synthetic or a.lowrank:
            source = ["--synthetic", str(a.synthetic)] if a.synthetic else ["--lowrank", str(a.lowrank)]
            if a.dim is not None:
                source += ["--dim", str(a.dim)]
            data_dir = tmp
            extra_write = ["--write-dataset", tmp]
        else:
            source = [a.dataset]
            data_dir = a.dataset
            extra_write = []
        print("running Valori bench_recall ...", file=sys.stderr)
        on_disk = ["--vectors-on-disk", os.path.join(tmp, "vectors")] if a.vectors_on_disk else []
        v = run_valori("bench_recall", source, a.queries, a.threads, ["--ef", efs] + extra_write + on_disk)
        print("running Valori bench_filter ...", file=sys.stderr)
        vf = run_valori("bench_filter", source, a.queries, a.threads, ["--ef", efs] + extra_write + on_disk)
        base = read_vecs(os.path.join(data_dir, "base.fvecs"), np.float32)
        queries = read_vecs(os.path.join(data_dir, "query.fvecs"), np.float32)[: a.queries]
        truth = read_vecs(os.path.join(data_dir, "groundtruth.ivecs"), np.int32)[: a.queries]
        tags_path = os.path.join(data_dir, "tags.u64")
        tags = np.fromfile(tags_path, dtype=np.uint64) if os.path.exists(tags_path) else None
        tag_truth_path = os.path.join(data_dir, "groundtruth_tag0.ivecs")
        tag_truth = read_vecs(tag_truth_path, np.int32)[: a.queries] if os.path.exists(tag_truth_path) else None
        if tag_truth is None:
            tags = None
        print("running hnswlib ...", file=sys.stderr)
        h = bench_hnswlib(base, queries, truth, a.threads, tags, tag_truth)
        print("running faiss ...", file=sys.stderr)
        f = bench_faiss(base, queries, truth, a.threads, tags, tag_truth)
    valori_filtered = [r for r in vf["selectivities"] if r["tag"] == 0][0]["runs"] if vf.get("selectivities") else []
    sel = [r for r in vf.get("selectivities", []) if r["tag"] == 0]
    sel_note = f"{sel[0]['selectivity'] * 100:.1f}%" if sel else "?"
    print(f"\ndataset: {v['dataset']}; {len(queries)} queries, k=10, M=16, efConstruction=200")
    print(f"machine: {v['machine']}; build with {a.threads} threads, queries on 1 thread")
    print("Valori's full-precision vectors: " + ("in mapped files (--vectors-on-disk)" if a.vectors_on_disk else "on the heap") + "\n")
    rows = [
        ("build vectors/s", f"{v['build_vectors_per_s']:.0f}", f"{h['build_vps']:.0f}", f"{f['build_vps']:.0f}"),
        ("QPS @ recall@10 0.95", fmt_at(v["runs"], 0.95), fmt_at(h["runs"], 0.95), fmt_at(f["runs"], 0.95)),
        ("QPS @ recall@10 0.99", fmt_at(v["runs"], 0.99), fmt_at(h["runs"], 0.99), fmt_at(f["runs"], 0.99)),
        (f"filtered ({sel_note}) @0.99", fmt_filtered(valori_filtered), fmt_filtered(h["filtered"]), fmt_filtered(f["filtered"])),
        ("memory (MiB, RSS delta)", f"{v['memory_bytes'] / 2**20:.1f} ({v['memory_accounted_bytes'] / 2**20:.1f} held)", f"{h['memory'] / 2**20:.1f}", f"{f['memory'] / 2**20:.1f}"),
        ("private (MiB, RssAnon delta)", f"{v['memory_private_bytes'] / 2**20:.1f} ({v['vectors_mapped_bytes'] / 2**20:.1f} in files)", f"{h['private'] / 2**20:.1f}", f"{f['private'] / 2**20:.1f}"),
    ]
    w = [max(len(r[i]) for r in rows + [("", "Valori", "hnswlib", "faiss HNSWFlat")]) for i in range(4)]
    line = lambda r: " | ".join(c.ljust(w[i]) for i, c in enumerate(r))
    print(line(("", "Valori", "hnswlib", "faiss HNSWFlat")))
    print("-+-".join("-" * x for x in w))
    for r in rows:
        print(line(r))
    print("\nrecall@10 / QPS per ef:")
    for name, runs in (("valori", v["runs"]), ("hnswlib", h["runs"]), ("faiss", f["runs"])):
        print(f"  {name:8}", "  ".join(f"ef{r['ef']}:{r['recall_at_10']:.3f}/{r['qps']:.0f}" for r in runs))


if __name__ == "__main__":
    main()
