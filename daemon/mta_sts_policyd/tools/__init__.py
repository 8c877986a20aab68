"""Operator tools that run discovery and probes directly (no daemon needed): `resolve`.

Imports: any part below `service`; never `service` or `cli`.
"""
