"""Diffusion-modality tests (a package, so test modules can import the shared settings)."""
