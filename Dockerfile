# Image for the Kubeflow (KFP v2) pipeline: every component runs in it.
#
#   docker build -t REGISTRY/movielens-two-stage:TAG .
#   docker push REGISTRY/movielens-two-stage:TAG
#   python kubeflow_runner.py --image REGISTRY/movielens-two-stage:TAG ...
#
# KubeflowV2DagRunner compiles each component to the container command
#   python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor
# (in the spec, so the ENTRYPOINT is free for Beam, see below). Module code (Transform's preprocessing_fn, the
# Trainers' run_fn, the custom components) comes from this package installed
# into site-packages, by import path.
FROM python:3.10-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_NO_CACHE=1 \
    TF_USE_LEGACY_KERAS=1 \
    RECSYS_FILESYSTEM_PLUGINS=s3

WORKDIR /opt/recsys

# Locked dependencies first (cached while only the code changes). pyfarmhash
# (via tfx-bsl) ships no wheel, hence a C++ compiler for the duration.
COPY requirements.lock ./
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && pip install --no-cache-dir uv \
 && uv pip install --system -r requirements.lock \
 && apt-get purge -y --auto-remove g++ \
 && rm -rf /var/lib/apt/lists/*

# This package (pipeline, components, transform, trainer_modules, common).
COPY . .
# s3:// / MinIO for every component, stock ones included: the .pth hook loads
# tensorflow-io's S3 plugin at interpreter start while RECSYS_FILESYSTEM_PLUGINS
# names "s3" (common/filesystems.py). Set it to "" for gs:// or local roots only.
RUN uv pip install --system --no-deps . \
 && cp docker/recsys_filesystems.pth "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/" \
 && cd / \
 && python -c "import common, pipeline.pipeline, transform.preprocessing, trainer_modules.retrieval, trainer_modules.ranking, tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"

# The same image is the Beam SDK container for Dataflow / Flink / Spark
# workers (--sdk_container_image, or --environment_config with
# --environment_type=DOCKER): they then have TFT, TFMA and this package.
# Beam starts workers through the image's ENTRYPOINT, its boot binary, taken
# from Beam's own SDK image of the pinned version; Kubeflow ignores the
# ENTRYPOINT, since the compiled spec gives each container its command.
COPY --from=apache/beam_python3.10_sdk:2.74.0 /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
