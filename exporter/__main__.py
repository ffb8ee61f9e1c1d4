"""Run the exporter: python -m exporter."""

from exporter.service import ExporterService
from headrace.settings import Settings
from headrace.web import run_service

run_service(ExporterService, Settings())
