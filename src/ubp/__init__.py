"""Universal Behavioral Profiles: from raw e-commerce event logs to one vector per client."""
