"""Downstream evaluation: the challenge's metrics (`metrics`), the fixed MLP protocol (`protocol`) and
the `evaluate@<profile>` stage that scores one embedding on the six tasks (`run`)."""
