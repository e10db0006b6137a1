"""Orchestrators: deterministic generators that only yield durable tasks (one blueprint each)."""
