"""The DAG files (a package only so that import-linter can see them; Airflow parses the files)."""
