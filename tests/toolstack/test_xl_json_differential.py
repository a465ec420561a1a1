"""Issue 19: the JSON xenabi writes for an xl.cfg is the JSON real xl writes, checked against Debian's xl 4.17.

Configs from :mod:`.xlgen` (every guest type, every key issue 19 maps, some broken on purpose) are given to real
``xl create -n`` (``tests/oracle/xl_dryrun.py``) and to :meth:`DomainConfig.from_xl`, and must agree as
:func:`.xlgen.compare` says. Each run uses a fresh seed, printed so that a failure can be replayed
(``XENABI_XL_DIFF_SEED=<seed>``); ``XENABI_XL_DIFF_CASES`` sets the count (default 2,000).
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from ..oracle import xl_dryrun
from .xlgen import compare, config

pytestmark = pytest.mark.skipif(xl_dryrun.unavailable() is not None, reason=str(xl_dryrun.unavailable()))


def test_differential_against_real_xl() -> None:
    seed = int(os.environ.get("XENABI_XL_DIFF_SEED", random.SystemRandom().randrange(2**32)))
    cases = int(os.environ.get("XENABI_XL_DIFF_CASES", "2000"))
    print(f"xl JSON differential: seed {seed}, {cases} configs (XENABI_XL_DIFF_SEED={seed} replays it)")
    r = random.Random(seed)
    texts = [config(r) for _ in range(cases)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda item: xl_dryrun.dry_run(item[0]), texts))
    failures = []
    for (source, _broken), dry in zip(texts, runs, strict=True):
        why = compare(source, dry)
        if why:
            failures.append(f"{why}\n--- config ---\n{source}")
    refused = sum(1 for dry in runs if dry.returncode != 0)
    kinds = {kind: sum(1 for (source, _b) in texts if f'type = "{kind}"' in source) for kind in ("hvm", "pv", "pvh")}
    print(f"xl refused {refused}; by guest type {kinds}")
    assert not failures, f"seed {seed}: {len(failures)} of {cases} disagree; first:\n{failures[0]}"
    assert refused > cases // 50 and all(kinds.values())  # the generator really covers refusals and every type
