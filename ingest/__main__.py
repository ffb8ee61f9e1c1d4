"""Run the ingest service: python -m ingest."""

import uvloop

from headrace.settings import Settings
from headrace.web import run_service
from ingest.service import IngestService

# The push path is mostly event-loop and socket work; uvloop roughly halves its per-request cost.
uvloop.install()
run_service(IngestService, Settings())
