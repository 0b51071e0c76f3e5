"""A job that holds one Spark operation running until something stops it (``python -m tests.slow_spark_job``).

Used by ``tests/integration/test_launcher_kill.py``: it opens the session the launcher named
(``RECSYS_SPARK_SESSION_ID``, as every Spark job does) and counts over a range far too long to finish,
so the only way its Spark job ends early is an interrupt.
"""

from __future__ import annotations

import os
import sys

from jobs.core.config import get_config
from jobs.core.spark import SESSION_ENV, connect


def main() -> int:
    spark = connect(get_config(), "slow-job", session_id=os.environ[SESSION_ENV])
    print(f"session {os.environ[SESSION_ENV]} open: counting the odd numbers below 10^15", flush=True)
    spark.range(0, 10**15, 1, 2).selectExpr("sum(id % 2)").collect()  # no overflow (ANSI mode would fail it)
    return 0


if __name__ == "__main__":
    sys.exit(main())
