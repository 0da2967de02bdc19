"""Run a function on ``world_size`` CPU processes joined by a gloo process group (the CPU stand-in for
``torchrun``): each process sets one thread, joins the group through a file store, runs
``fn(rank, world_size, *args)`` and hands its (picklable) result back; a rank that raises fails the
call with that rank's traceback. Results are pickled by value in the rank (plain ``pickle``): the
queue's own pickler would pass tensors through shared memory that dies with the rank's process."""

from __future__ import annotations

import datetime
import os
import pickle
import tempfile
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank, world_size, store_path, timeout_s, fn, args, results):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        try:
            results.put((rank, True, pickle.dumps(fn(rank, world_size, *args))))
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - handed to the parent, which re-raises
        results.put((rank, False, traceback.format_exc()))


def run_ranks(fn, world_size: int, *args, timeout_s: float = 60.0, join_s: float = 240.0) -> list:
    """``[fn(0, world_size, *args), ..., fn(world_size - 1, ...)]``, each run in its own process.

    ``fn`` must be a module-level function (it is pickled into spawned processes); ``timeout_s`` is the
    process group's collective timeout, ``join_s`` the wall-clock limit of the whole call."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        procs = [ctx.Process(target=_worker, args=(r, world_size, store, timeout_s, fn, args, results))
                 for r in range(world_size)]
        for p in procs:
            p.start()
        got = {}
        try:
            for _ in range(world_size):
                rank, ok, value = results.get(timeout=join_s)
                got[rank] = (ok, value)
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
    failed = {r: v for r, (ok, v) in got.items() if not ok}
    if failed:
        raise RuntimeError("\n".join(f"rank {r} failed:\n{tb}" for r, tb in sorted(failed.items())))
    return [pickle.loads(got[r][1]) for r in range(world_size)]
