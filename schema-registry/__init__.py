"""The schema-registry service: every storage's model as Avro schemas, over the Confluent Schema Registry API."""
