"""The registry's errors, each with the HTTP status and the Confluent error code the REST API answers with."""

from __future__ import annotations


class RegistryError(Exception):
    status = 500
    error_code = 50001

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, object]:
        return {"error_code": self.error_code, "message": self.message}


class SubjectNotFound(RegistryError):
    status, error_code = 404, 40401


class VersionNotFound(RegistryError):
    status, error_code = 404, 40402


class SchemaNotFound(RegistryError):
    status, error_code = 404, 40403


class SubjectSoftDeleted(RegistryError):
    status, error_code = 404, 40404


class SubjectNotSoftDeleted(RegistryError):
    status, error_code = 404, 40405


class VersionSoftDeleted(RegistryError):
    status, error_code = 404, 40406


class VersionNotSoftDeleted(RegistryError):
    status, error_code = 404, 40407


class SubjectConfigNotFound(RegistryError):
    status, error_code = 404, 40408


class InvalidSchema(RegistryError):
    status, error_code = 422, 42201


class InvalidVersion(RegistryError):
    status, error_code = 422, 42202


class InvalidCompatibilityLevel(RegistryError):
    status, error_code = 422, 42203


class IncompatibleSchema(RegistryError):
    status, error_code = 409, 409
