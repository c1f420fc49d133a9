"""Process-wide settings of fedmisp's long-running processes (the node, its row workers).

CPython's cyclic garbage collector runs a young-generation pass every 700 container allocations
and walks older generations as they fill. A pull decodes hundreds of thousands of element dicts
that die young and hold no cycles, so with the defaults the collector ran thousands of times per
bulk pull, walking everything the node had just built: bench/sync.py measured replication at about
0.87x the time and the sender at about 0.7x the CPU with the settings below (decision 0015, "Later").
Reference counting still frees everything at once; only cycles wait a little longer.
"""
from __future__ import annotations

import gc

# Young-generation threshold: collect after this many net container allocations (default 700);
# the older generations every 20 and 10 of those passes, so a full pass stays a regular event.
GC_GEN0 = 20_000


def tune_gc() -> None:
    """Freeze what the process loaded so far (modules, schemas: never garbage) out of every future
    pass, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0, 20, 10)
