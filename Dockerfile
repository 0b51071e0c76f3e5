# syntax=docker/dockerfile:1
#
# The Airflow image: scheduler, api-server, dag-processor, triggerer and workers all run it.
# Build from the repository root:  docker build -t ghcr.io/recsys/airflow:3.3.2 .
#
# The base tag must name the apache-airflow version pinned in requirements.txt
# (tests/unit/test_dockerfiles.py checks it; the pip step below re-checks it at build time).
FROM apache/airflow:3.3.2-python3.11

# ---- OS packages (root) --------------------------------------------------------------------
# Spark (pyspark 4.x) needs a Java 17+ runtime. `mkdir -p /usr/share/man/man1` works around the
# JRE's postinst failing on slim Debian images, which ship without man folders. JAVA_HOME is a
# stable, architecture-independent link (the Debian folder is java-17-openjdk-<arch>).
USER root
RUN set -eux; \
    mkdir -p /usr/share/man/man1; \
    apt-get update; \
    apt-get install -y --no-install-recommends openjdk-17-jre-headless; \
    ln -sfn "/usr/lib/jvm/java-17-openjdk-$(dpkg --print-architecture)" /usr/lib/jvm/java-17; \
    /usr/lib/jvm/java-17/bin/java -version; \
    apt-get autoremove -yqq --purge; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17

# ---- Python packages (airflow user, as the base image expects) -------------------------------
USER airflow

# requirements.txt is the one lock for the whole project, but this image installs it minus what
# it never runs, to stay light:
#   * torch: training runs in its own CUDA image (Dockerfile.train) inside a Kubernetes pod, so
#     no Airflow process imports it; on Linux the PyPI wheel also drags in several GB of
#     nvidia-* CUDA libraries;
#   * pytest, pytest-timeout, ruff, mypy, playwright, implicit (a benchmark baseline) and
#     kubernetes-validate: test, lint and benchmark tools.
# Everything else is installed at exactly the locked version. tests/unit/test_dockerfiles.py
# applies this pattern to requirements.txt and checks that no kept package depends on a dropped one.
ARG AIRFLOW_IMAGE_EXCLUDE="^(torch|pytest|pytest-timeout|ruff|mypy|playwright|implicit|kubernetes-validate)=="
COPY --chown=airflow:0 requirements.txt /requirements.txt
RUN set -eux; \
    grep -viE "${AIRFLOW_IMAGE_EXCLUDE}" /requirements.txt > /tmp/requirements-airflow.txt; \
    grep -qxF "apache-airflow==${AIRFLOW_VERSION}" /tmp/requirements-airflow.txt \
      || { echo "requirements.txt does not pin apache-airflow==${AIRFLOW_VERSION} (the base image)" >&2; exit 1; }; \
    pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements-airflow.txt; \
    rm -f /tmp/requirements-airflow.txt

# ---- The project ---------------------------------------------------------------------------
# One folder laid out like the repository, so jobs/config.py finds include/config/pipeline.yaml
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
