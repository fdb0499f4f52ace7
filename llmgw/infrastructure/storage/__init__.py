"""Generation stores: memory, SQLite and PostgreSQL adapters of the `GenerationStore` port."""
