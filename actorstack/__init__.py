"""The composition root: configuration, logging, the command line, and the roles `up` runs.

This package wires the layers together (`actors`, `api`, `hostagent`); nothing below imports it
except for configuration and logging.
"""
