"""Eventfold's event contract: Avro schemas, pydantic models, codec, compatibility.

Submodules: ``catalog`` (topics), ``events`` (models and parsing), ``codec``
(Avro single-object encoding), ``compatibility`` (evolution checks),
``examples`` (one valid envelope per type). Import them directly; this package
imports nothing so that ``import schemas.catalog`` stays cheap.
"""
