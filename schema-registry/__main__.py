"""Run the schema registry: python -m schema_registry."""

from schema_registry.service import SchemaRegistryService

from headrace.settings import Settings
from headrace.web import run_service

run_service(SchemaRegistryService, Settings())
