"""A Python preamble for a subprocess that must reach no network: its sockets refuse and record each
attempt in ``attempts``, and every warning logged is kept in ``records``. A test appends what it checks
and prints those lists as JSON."""

NO_NETWORK = """
import json, logging, socket, sys, warnings
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("no network in this test")
socket.getaddrinfo = refuse
socket.socket.connect = lambda self, address: refuse(address)
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(f"{record.name}: {record.getMessage()}")
logging.getLogger().addHandler(Keep(logging.WARNING))
"""
