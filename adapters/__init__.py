"""Front ends over ecco_core records."""
