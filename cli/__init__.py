"""``imagefactory``: the admin command line over the app's HTTP API (docs/api.md#cli)."""
