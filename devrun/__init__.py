"""devrun: a development runner for Python WSGI apps.

Kept free of imports on purpose: the worker process imports this package before it
monkey-patches, so nothing here may pull in threading, sockets or ssl.
"""

__version__ = "0.1.0"
