"""Activities: small, idempotent steps, each one Azure call or query (docs/build-activities.md)."""
