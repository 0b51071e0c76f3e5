# syntax=docker/dockerfile:1
#
# The Airflow image: scheduler, api-server, dag-processor, triggerer and workers all run it.
# Build from the repository root:  docker build -t ghcr.io/recsys/airflow:3.3.2 .
#
# The base tag must name the apache-airflow version pinned in requirements.txt
# (tests/unit/test_dockerfiles.py checks it; the pip step below re-checks it at build time).
FROM apache/airflow:3.3.2-python3.11

# ---- No JVM --------------------------------------------------------------------------------
# Every Spark job is a Spark Connect client (jobs/core/spark.py): the JVMs run in the Spark
# cluster behind its Connect server (include/k8s/spark-connect.yaml), so this image installs no
# Java runtime; pyspark is here for its Connect client only.

# ---- Python packages (airflow user, as the base image expects) -------------------------------
USER airflow

# requirements.txt is the one lock for the whole project, but this image installs it minus what
# it never runs, to stay light:
#   * torch: training runs in its own CUDA image (Dockerfile.train) inside a Kubernetes pod, so
#     no Airflow process imports it; on Linux the PyPI wheel also drags in several GB of
#     nvidia-* CUDA libraries;
#   * pytest, pytest-timeout, pytest-xdist, execnet (xdist's transport), ruff, mypy, playwright,
#     implicit (a benchmark baseline) and kubernetes-validate: test, lint and benchmark tools.
# Everything else is installed at exactly the locked version. tests/unit/test_dockerfiles.py
# applies this pattern to requirements.txt and checks that no kept package depends on a dropped one.
ARG AIRFLOW_IMAGE_EXCLUDE="^(torch|pytest|pytest-timeout|pytest-xdist|execnet|ruff|mypy|playwright|implicit|kubernetes-validate)=="
COPY --chown=airflow:0 requirements.txt /requirements.txt
RUN set -eux; \
    grep -viE "${AIRFLOW_IMAGE_EXCLUDE}" /requirements.txt > /tmp/requirements-airflow.txt; \
    grep -qxF "apache-airflow==${AIRFLOW_VERSION}" /tmp/requirements-airflow.txt \
      || { echo "requirements.txt does not pin apache-airflow==${AIRFLOW_VERSION} (the base image)" >&2; exit 1; }; \
    pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements-airflow.txt; \
    rm -f /tmp/requirements-airflow.txt

# ---- The project ---------------------------------------------------------------------------
# One folder laid out like the repository, so jobs/core/config.py finds include/config/pipeline.yaml
# relative to itself, `import jobs` works in DAGs and `python -m jobs.<name>` works in tasks.
ENV RECSYS_PROJECT_DIR=/opt/airflow/project
COPY --chown=airflow:0 include/ /opt/airflow/project/include/
COPY --chown=airflow:0 jobs/ /opt/airflow/project/jobs/
COPY --chown=airflow:0 plugins/ /opt/airflow/project/plugins/
COPY --chown=airflow:0 dags/ /opt/airflow/project/dags/

ENV PYTHONPATH=/opt/airflow/project:/opt/airflow/project/plugins \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/project/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/project/plugins \
    RECSYS_PROFILE=cluster
