"""SQLite connection arguments for the local profile's Airflow metadata DB.

Scheduler, dag-processor, api-server, triggerer, task workers and the CLI all write to one
SQLite file. sqlite3's default 5 s busy timeout makes a writer fail with "database is locked"
while another one commits; waiting longer (and the WAL journal set by ``scripts/stack.py``)
serialises them instead. Wired in through ``[database] sql_alchemy_connect_args``.
"""

CONNECT_ARGS = {"timeout": 120}
