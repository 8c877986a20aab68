"""Configuration: TOML -> typed, validated frozen dataclasses (the only place keys are named).

Imports: `errors` only. Every other part receives settings objects, never raw TOML.
"""
