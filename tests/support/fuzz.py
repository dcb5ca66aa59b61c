"""Settings of the fuzz tests: a short run in the suite, a long one on demand.

``MYSQLPROBE_FUZZ_EXAMPLES=N`` runs every fuzz target with N examples instead of its
suite default (the documented long run: ``MYSQLPROBE_FUZZ_EXAMPLES=20000 python3 -m pytest
-m fuzz -q -p no:cacheprovider``). Hypothesis keeps the failing examples it finds in its
database (``.hypothesis/``); a crash found that way is kept as an explicit ``@example`` or
a plain regression test next to its target.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: Variable that turns a suite run into a long fuzz run.
EXAMPLES_VARIABLE = "MYSQLPROBE_FUZZ_EXAMPLES"


def fuzz_settings(suite_examples: int) -> settings:
    examples = int(os.environ.get(EXAMPLES_VARIABLE, "0")) or suite_examples
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
