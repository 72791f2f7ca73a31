"""GPUs for serving: detection (detect), CDI specs (cdi), passthrough planning (passthrough)."""
