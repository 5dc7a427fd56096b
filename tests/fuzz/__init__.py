"""Property-based fuzzing of the running API against its own OpenAPI description."""
