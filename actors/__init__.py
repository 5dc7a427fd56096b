"""The actor runtime: durable actors on PostgreSQL, driven by messages on RabbitMQ.

See actors/README.md for the guarantees and for how to add an actor kind.
"""
