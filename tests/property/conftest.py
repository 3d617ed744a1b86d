"""Hypothesis profiles for the property suite.

``deadline=None`` everywhere: the supervisor machine runs a real event loop in a thread, whose
step times say nothing about correctness. With ``CI`` set, runs are derandomized (the same
examples every time, no example database) so a red CI run is reproducible from its log.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("megatrio-dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "megatrio-dev")
