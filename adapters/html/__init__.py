"""html adapter."""
