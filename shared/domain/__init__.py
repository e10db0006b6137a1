"""The pure domain of image builds: catalogue, versions, naming, steps, manifests and events.

Nothing here imports an Azure SDK or a gateway (import-linter enforces it): every decision is a
plain function over pydantic models or frozen dataclasses, tested without mocks.
"""
