#!/usr/bin/env python3
"""Embedded Valori against chromadb's PersistentClient on the same vectors, in one run.

Both store to a fresh directory on the same disk, with the same HNSW parameters (chroma's
defaults unless given: M=16, efConstruction=100, efSearch=100). Inserts go in batches (Valori: one atomic,
synced batch per call; chroma: its own batches), then single queries, k=10, one at a time.
Each system inserts `--repeat` times (default 2), each time into a fresh directory, and the best
time counts (the machine is shared; the same rule for both). Prints insert throughput, query
latency (p50/p99/mean), the first query's latency right after the inserts (a system that
indexed lazily would pay there), and recall@10 against exact ground truth (float64 brute
force, computed after the timed runs), with the machine and versions.

    pip install ./python chromadb numpy
    python3 python/bench/bench_chroma.py --synthetic 100000          # 100k x 128, clustered
    python3 python/bench/bench_chroma.py --dataset ../shared/data/textdev10k
    python3 python/bench/bench_chroma.py --synthetic 100000 --write-dataset /tmp/gauss100k
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np


def read_vecs(path: str) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    return np.ascontiguousarray(raw.reshape(-1, dim + 1)[:, 1:].view(np.float32))


def write_fvecs(path: str, data: np.ndarray) -> None:
    rows = np.empty((len(data), data.shape[1] + 1), dtype=np.int32)
    rows[:, 0] = data.shape[1]
    rows[:, 1:] = np.ascontiguousarray(data, dtype=np.float32).view(np.int32)
    rows.tofile(path)


def synthetic(n: int, dim: int, queries: int, seed: int = 1) -> tuple:
    """Gaussian clusters, like the Rust benchmarks' synthetic sets (not the same generator)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1.0, 1.0, size=(256, dim))
    pick = rng.integers(0, 256, size=n + queries)
    data = (centres[pick] + rng.normal(0.0, 0.15, size=(n + queries, dim))).astype(np.float32)
    return data[:n], data[n:]


def ground_truth(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    b = base.astype(np.float64)
    norms = (b * b).sum(1)
    out = []
    for q in queries.astype(np.float64):
        d = norms - 2.0 * (b @ q)
        top = np.argpartition(d, k)[:k]
        out.append(top[np.lexsort((top, d[top]))])
    return np.array(out)


def recall(found: list, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


def latencies(fn, queries: np.ndarray) -> tuple:
    found, times = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(fn(q))
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return found, {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                   "mean_ms": float(ms.mean())}


def bench_valori(base, queries, k, batch, root, hnsw, repeat):
    """Best insert time over `repeat` fresh databases; queries on the last one."""
    from valori import Valori

    best = float("inf")
    for r in range(repeat):
        path = os.path.join(root, f"valori-{r}")
        with Valori(path=path) as db:
            db.create_collection("bench", base.shape[1], metric="l2", index="hnsw", m=hnsw["m"],
                                 ef_construction=hnsw["ef_construction"],
                                 ef_search=hnsw["ef_search"])
            t = time.perf_counter()
            for i in range(0, len(base), batch):
                db.insert_batch(base[i:i + batch], collection="bench")
            best = min(best, time.perf_counter() - t)
            if r + 1 < repeat:
                continue
            t = time.perf_counter()
            db.search(queries[0], k=k, collection="bench")
            first_ms = (time.perf_counter() - t) * 1e3
            for q in queries[:50]:  # warm-up
                db.search(q, k=k, collection="bench")
            found, lat = latencies(
                lambda q: [h.id for h in db.search(q, k=k, collection="bench")], queries)
    return best, found, {**lat, "first_query_ms": first_ms}


def bench_chroma(base, queries, k, batch, root, hnsw, repeat):
    """As bench_valori, with a chromadb PersistentClient per run."""
    import chromadb

    best = float("inf")
    ids = [str(i) for i in range(len(base))]
    for r in range(repeat):
        client = chromadb.PersistentClient(path=os.path.join(root, f"chroma-{r}"))
        col = client.create_collection(
            "bench", embedding_function=None,
            configuration={"hnsw": {"space": "l2", "max_neighbors": hnsw["m"],
                                    "ef_construction": hnsw["ef_construction"],
                                    "ef_search": hnsw["ef_search"]}})
        step = min(batch, client.get_max_batch_size())
        t = time.perf_counter()
        for i in range(0, len(base), step):
            col.add(ids=ids[i:i + step], embeddings=base[i:i + step])
        best = min(best, time.perf_counter() - t)
    # A system that indexed lazily would pay for it here.
    t = time.perf_counter()
    col.query(query_embeddings=[queries[0]], n_results=k)
    first_ms = (time.perf_counter() - t) * 1e3
    for q in queries[:50]:
        col.query(query_embeddings=[q], n_results=k)
    found, lat = latencies(
        lambda q: [int(x) for x in col.query(query_embeddings=[q], n_results=k)["ids"][0]],
        queries)
    return best, found, {**lat, "first_query_ms": first_ms}, chromadb.__version__


def cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, metavar="N", help="N synthetic vectors")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--dataset", help="a TEXMEX directory (base.fvecs, query.fvecs)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--m", type=int, default=16, help="HNSW links per node (both)")
    ap.add_argument("--ef-construction", type=int, default=100, help="HNSW build list (both)")
    ap.add_argument("--ef-search", type=int, default=100, help="HNSW search list (both)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="insert runs per system, each into a fresh directory; the best counts")
    ap.add_argument("--dir", help="where to put both databases (default: a temporary directory)")
    ap.add_argument("--write-dataset", metavar="DIR",
                    help="write the synthetic set to DIR (base.fvecs, query.fvecs) and exit: "
                         "the Rust benchmarks read it as a data set")
    args = ap.parse_args()
    if args.dataset:
        base = read_vecs(os.path.join(args.dataset, "base.fvecs"))
        queries = read_vecs(os.path.join(args.dataset, "query.fvecs"))[:args.queries]
        name = os.path.basename(os.path.normpath(args.dataset))
    else:
        base, queries = synthetic(args.synthetic or 100_000, args.dim, args.queries)
        name = f"synthetic {len(base)} x {args.dim}"
        if args.write_dataset:
            os.makedirs(args.write_dataset, exist_ok=True)
            write_fvecs(os.path.join(args.write_dataset, "base.fvecs"), base)
            write_fvecs(os.path.join(args.write_dataset, "query.fvecs"), queries)
            return
    hnsw = {"m": args.m, "ef_construction": args.ef_construction, "ef_search": args.ef_search}
    root = tempfile.mkdtemp(prefix="valori-chroma-", dir=args.dir)
    try:
        v_ins, v_found, v_lat = bench_valori(base, queries, args.k, args.batch, root, hnsw,
                                             args.repeat)
        c_ins, c_found, c_lat, c_ver = bench_chroma(base, queries, args.k, args.batch, root, hnsw,
                                                    args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    # After the timed runs: numpy's BLAS threads keep spinning for a while after a product, and
    # would take a core from whichever system ran next.
    truth = ground_truth(base, queries, args.k)
    n = len(base)
    report = {
        "dataset": name, "vectors": n, "dim": int(base.shape[1]), "queries": len(queries),
        "k": args.k, "hnsw": hnsw, "repeat": args.repeat, "machine": f"{cpu()}, {os.cpu_count()} cores", "chromadb": c_ver,
        "valori": {"insert_vectors_per_s": n / v_ins, "recall": recall(v_found, truth), **v_lat},
        "chroma": {"insert_vectors_per_s": n / c_ins, "recall": recall(c_found, truth), **c_lat},
    }
    report["insert_speedup"] = report["valori"]["insert_vectors_per_s"] / report["chroma"]["insert_vectors_per_s"]
    report["p50_latency_ratio"] = v_lat["p50_ms"] / c_lat["p50_ms"]
    print(f"{name}: {n} vectors, {len(queries)} queries, k={args.k}, HNSW M={args.m} "
          f"efConstruction={args.ef_construction} efSearch={args.ef_search} for both; "
          f"{report['machine']}; chromadb {c_ver}")
    print(f"{'':8} {'insert/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'recall@k':>9} "
          f"{'1st ms':>8}")
    for who in ("valori", "chroma"):
        r = report[who]
        print(f"{who:8} {r['insert_vectors_per_s']:12.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} "
              f"{r['mean_ms']:8.3f} {r['recall']:9.4f} {r['first_query_ms']:8.3f}")
    print(f"insert speed-up {report['insert_speedup']:.1f}x, p50 latency ratio "
          f"{report['p50_latency_ratio']:.2f} (valori / chroma)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
