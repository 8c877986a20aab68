"""The running daemon: the one composition root that turns the config into objects, plus
the control socket, metrics exposition, TLS-RPT pipeline and process settings.

The only part that knows every other part. Imported only by `cli`.
"""
