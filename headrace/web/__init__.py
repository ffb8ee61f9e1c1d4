"""The HTTP service base every service builds on: lifecycle, health, readiness and metrics endpoints."""

from headrace.web.service import HttpService, json_error, run_service

__all__ = ["HttpService", "json_error", "run_service"]
