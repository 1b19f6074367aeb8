"""Agents: interface, registry, orchestrator and industry agents (a later issue)."""
