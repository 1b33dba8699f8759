"""HTTP over the tailnet with the libraries apps already use (issue 18)."""
