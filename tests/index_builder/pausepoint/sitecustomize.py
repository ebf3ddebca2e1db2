"""Test-only, never installed: the kill tests put this folder first on the PYTHONPATH of a real
``python -m index_builder build`` subprocess, so Python imports it at start-up (as it does any ``sitecustomize``).

With ``SBIR_TEST_PAUSE_AT_SEAL=N`` set, the N-th segment the process seals (the build's own segment is the first;
a merge at the end of the build writes the next) stops just before its ``segment.json`` and rename: its files are
all written into ``segments/.tmp-*`` and nothing is published. It prints ``paused <temp folder>`` to stderr and
waits for the test's SIGKILL. A segment write lasts ~15 ms of a build (measured): too short to hit from outside
without this. Without the variable it does nothing."""

import os
import sys
import time

_SEAL = os.environ.get("SBIR_TEST_PAUSE_AT_SEAL")

if _SEAL:
    from photo_index.backends.folder.segments import segment

    _real_seal, _count = segment._seal, [0]

    def _seal_or_pause(tmp, segments_dir, info):
        _count[0] += 1
        if _count[0] == int(_SEAL):
            print(f"paused {tmp}", file=sys.stderr, flush=True)
            while True:
                time.sleep(60)
        return _real_seal(tmp, segments_dir, info)

    segment._seal = _seal_or_pause
