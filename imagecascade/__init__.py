"""Build, verify and ship a cascade of Docker images keyed by content freshness hashes.

The pure core (declaration, context, freshness, lock, graph, plan) imports no docker or google
code, so the pre-commit hook stays fast.
"""
