"""Run the ingest service: python -m ingest."""

from headrace.settings import Settings
from headrace.web import run_service
from ingest.service import IngestService

run_service(IngestService, Settings())
