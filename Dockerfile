# Image of the Eventfold Python services (processor, producer API, query API).
FROM python:3.11-slim
WORKDIR /app
# the processor's allocator (stream_processors/worker.py)
RUN apt-get update && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY producers producers
COPY stream_processors stream_processors
COPY projections projections
COPY query_api query_api
COPY eventfold eventfold
RUN pip install --no-cache-dir .
ENV EVENTFOLD_PROCESSOR_DATA_DIR=/tmp/eventfold-processor
