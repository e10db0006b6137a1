"""Shared code: the pure domain (shared.domain) and the Azure gateways (shared.azure)."""
