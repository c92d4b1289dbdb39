"""Learning-rate sanity: a short fine-tuning probe at the configured rate must not kill filters."""
