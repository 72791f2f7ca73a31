"""Where services run: one backend each for Podman containers and local processes."""
