"""Plain-Python core of the query-understanding engine: the domain, the adapters, the offline services."""
