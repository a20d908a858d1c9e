"""What the engine says about a query: tags, categories, rewrites, and where the answer came from."""
