"""Serving: the Podman engine, container specs, inference services, GPUs and the local engine."""
