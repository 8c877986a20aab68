"""The persistent tier of the policy cache. `sqlite` is the single-host implementation."""
