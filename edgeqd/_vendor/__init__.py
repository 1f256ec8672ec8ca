"""Vendored generated code (kept apart from the core modules; not edited by hand)."""
