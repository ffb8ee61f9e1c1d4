"""The schema-registry HTTP service: the Confluent Schema Registry REST API over the Postgres store."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from schema_registry.api import REGISTRY_BODY_TYPES, registry_errors, registry_response
from schema_registry.compatibility import CompatibilityRouter
from schema_registry.config import ConfigRouter
from schema_registry.schemas import SchemasRouter
from schema_registry.subjects import SubjectsRouter

from headrace.settings import Settings
from headrace.web.kafka_probe import KafkaProbedService


class SchemaRegistryService(KafkaProbedService):
    openapi_document = Path(__file__).with_name("openapi.yaml")
    name = "schema-registry"
    # What Confluent clients send; every route of the registry takes them.
    default_body_types = REGISTRY_BODY_TYPES

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.app.middlewares.append(registry_errors)

    def refuse(self, status: int, message: str, headers: dict[str, str]) -> web.StreamResponse:
        """Confluent's error body: 40101 for a missing or wrong token, 415 for a body type it does not take."""
        response = registry_response({"error_code": 40101 if status == 401 else status, "message": message}, status)
        response.headers.update(headers)
        return response

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.root)
        for resource in (SubjectsRouter, SchemasRouter, ConfigRouter, CompatibilityRouter):
            resource(self).add_to(router)

    async def root(self, request: web.Request) -> web.Response:
        return registry_response({})
