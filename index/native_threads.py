"""How many native threads FAISS (OpenMP) and BLAS may use, for servers that search from many threads.

OpenMP's thread count is a setting of the calling thread: ``faiss.omp_set_num_threads`` on the main
thread leaves every request thread of a pool at the default (one per core), so each of them starts
an OpenMP team whose workers spin between searches. BLAS pools (numpy's OpenBLAS, FAISS's) are per
process and busy-wait too; with request threads already filling the cores they only add contention
(a 50 x 4,096 product took 15 ms of CPU instead of 0.4 ms on a loaded 2-core machine).
"""
from __future__ import annotations

import faiss
from threadpoolctl import threadpool_limits


def limit_blas_threads(threads: int) -> None:
    """Caps every BLAS library loaded in the process (call once, at start)."""
    threadpool_limits(limits=threads, user_api="blas")


def limit_omp_threads(threads: int) -> None:
    """Caps FAISS's OpenMP team for the calling thread (call in each thread that searches)."""
    faiss.omp_set_num_threads(threads)
