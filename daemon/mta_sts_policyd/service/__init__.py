"""The running daemon: the one composition root that turns the config into objects
(composition.py), the daemon and its process entry point (daemon.py, run.py), SIGHUP rules,
the control socket, metrics exposition, TLS-RPT pipeline and process settings.

The only part that knows every other part. Imported only by `cli`, which uses composition.py,
run.py and the control client, never the daemon's own modules.
"""
