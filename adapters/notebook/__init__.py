"""notebook adapter."""
