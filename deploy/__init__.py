"""Deployment assets that are generated from code (not installed with the package)."""
