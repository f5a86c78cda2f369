# Image of the Eventfold Python services (processor, producer API, query API).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY producers producers
COPY stream_processors stream_processors
COPY projections projections
COPY query_api query_api
COPY eventfold eventfold
RUN pip install --no-cache-dir .
ENV EVENTFOLD_PROCESSOR_DATA_DIR=/tmp/eventfold-processor
