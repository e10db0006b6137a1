"""Azure gateways: the only place the app talks to Azure SDKs (typed wrappers over them)."""
