"""The schema-registry HTTP service: the Confluent Schema Registry REST API over the Postgres store."""

from __future__ import annotations

from aiohttp import web
from schema_registry.api import registry_errors, registry_response
from schema_registry.compatibility import CompatibilityRouter
from schema_registry.config import ConfigRouter
from schema_registry.schemas import SchemasRouter
from schema_registry.subjects import SubjectsRouter

from headrace.settings import Settings
from headrace.web.kafka_probe import KafkaProbedService


class SchemaRegistryService(KafkaProbedService):
    name = "schema-registry"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.app.middlewares.append(registry_errors)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.root)
        for resource in (SubjectsRouter, SchemasRouter, ConfigRouter, CompatibilityRouter):
            resource(self).add_to(router)

    async def root(self, request: web.Request) -> web.Response:
        return registry_response({})
