"""GPUs for serving: what the host has (host), detection (detect), CDI specs (cdi) and
passthrough planning (passthrough)."""
