"""Run the transform worker: python -m transform."""

from headrace.settings import Settings
from transform.app import run

run(Settings())
