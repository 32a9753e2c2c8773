# syntax=docker/dockerfile:1
# Airflow 3.3 with airflow-cloud-paas installed from this repository; built by docker-compose.yaml.
#
# The tag must name the apache-airflow version pinned in constraints.txt (a test checks it), so the
# lock and the image agree on Airflow and pip never swaps Airflow under the image's own providers.
FROM apache/airflow:3.3.2-python3.11

# `all` brings every cloud SDK and service (torch and htcondor included: several GB).
# For a smaller image: docker compose build --build-arg CLOUD_PAAS_EXTRAS=postgres,aws
ARG CLOUD_PAAS_EXTRAS=all

# pip builds the package in its source tree, so the airflow user must own that tree.
USER root
# /training: where a training job container trains (templates/training_job_container.yaml); a new Docker volume
# mounted there takes this owner
RUN install -d -o airflow -g 0 /opt/airflow-cloud-paas \
    && install -d -o airflow -g 0 -m 0775 /training

# Only what the package build reads: BuildKit then sends these files, never .venv or .git.
COPY --chown=airflow:0 pyproject.toml constraints.txt README.md /opt/airflow-cloud-paas/
COPY --chown=airflow:0 airflow_cloud_paas /opt/airflow-cloud-paas/airflow_cloud_paas
COPY --chown=airflow:0 hooks /opt/airflow-cloud-paas/hooks
COPY --chown=airflow:0 operators /opt/airflow-cloud-paas/operators
COPY --chown=airflow:0 sensors /opt/airflow-cloud-paas/sensors
COPY --chown=airflow:0 triggers /opt/airflow-cloud-paas/triggers

USER airflow
WORKDIR /opt/airflow-cloud-paas
# apache-airflow==${AIRFLOW_VERSION} (set by the base image) is what the image docs ask of every
# extension: it keeps the resolver from moving Airflow while it resolves the extras.
RUN pip install --no-cache-dir -c constraints.txt \
        "apache-airflow==${AIRFLOW_VERSION}" ".[${CLOUD_PAAS_EXTRAS}]" \
    && rm -rf build ./*.egg-info

WORKDIR /opt/airflow
