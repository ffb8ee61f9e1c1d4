"""Run the web console: python -m console."""

from console.service import ConsoleService
from headrace.settings import Settings
from headrace.web import run_service

run_service(ConsoleService, Settings())
