"""Layered configuration: dynaconf files and environment into frozen typed settings."""
