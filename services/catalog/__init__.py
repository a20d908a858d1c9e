"""The catalog: products, the taxonomy tree, lexicons and the artifacts the engine loads."""
