"""Models: the catalog, model files on disk, downloads and the hardware fit estimate."""
