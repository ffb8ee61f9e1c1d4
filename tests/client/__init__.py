"""Python client tests."""
