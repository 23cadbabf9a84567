"""DataLoader worker processes that start clean: the ``forkserver`` start method instead of ``fork``.

With ``fork`` a worker is a copy of the training process taken at one instant, with every lock as it was
and only the forking thread alive. By the time a loader starts, that process runs threads: OpenMP and
MKL workers, FFmpeg's frame-decoding threads (a dataset that decoded a frame in the parent holds a decoder
whose threads do not exist in the copy), pyarrow's pool. A worker that touches a lock one of those
threads held, or waits on a decoder thread, waits for ever and the loader with it. Seen here: a full
``pytest`` run hung with both workers of ``tests/data/test_windowed.py`` idle, one inside FFmpeg decoding,
one inside pandas indexing (py-spy). That process had also been switched to SCHED_FIFO by SVT-AV1 earlier
(data/video.py ``_keep_thread_scheduling``), which the workers inherited and which may have contributed.

``forkserver`` forks workers from a small server process that imported only ``FORKSERVER_PRELOAD`` and
started no threads; datasets reach the workers pickled (``LeRobotDataset.__getstate__`` drops open files
and caches). It is Python 3.14's default on Linux. The first loader pays the server's start and its
imports; later loaders reuse the server.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

# Imported once by the fork server, so each worker starts with them loaded instead of importing them.
FORKSERVER_PRELOAD = ("torch", "gigaworld_policy.data.windowed")


def worker_context(num_workers: int) -> BaseContext | None:
    """The multiprocessing context for a DataLoader with ``num_workers`` (None when it has none)."""
    if num_workers <= 0:
        return None
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    return ctx
