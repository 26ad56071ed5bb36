"""vega adapter."""
