"""Wires the operations console into a query API app: the latency histogram (and its
middleware), the chart sampler, the admin API and the console's pages. One call from
``query_api.api.create_app``, so the app's module stays about queries."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import Histogram

from eventfold.settings import Settings
from projections.read_models import Stores
from query_api.admin import Admin, admin_routes
from query_api.admin_metrics import LatencyMiddleware, Sampler
from query_api.console import console_routes


def mount_operations(
    app: FastAPI, settings: Settings, stores: Stores, histogram: Histogram
) -> Admin:
    """Add ``/v1/admin`` and ``/console`` to ``app``, and the latency middleware feeding
    ``histogram`` (``admin_metrics.latency_histogram``; the app's order shortcut feeds
    it too); the caller closes the returned ``Admin`` when the app stops (it aborts a
    console rebuild and stops sampling)."""
    app.add_middleware(LatencyMiddleware, histogram=histogram)
    admin = Admin(settings, stores, Sampler(settings, histogram))
    app.state.admin = admin
    app.include_router(admin_routes(admin))
    app.include_router(console_routes(settings))
    return admin
