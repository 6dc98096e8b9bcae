"""Records on the rings between the control process and the gateway workers.

A record is one pickled tuple whose first item names its kind. Pickle is safe here because only Kefu's
own processes write the rings (memfds shared with our children, never with a client); clients' bytes
travel inside the tuples as plain values, never as pickles.

worker → control (ingress, one ring for all workers; each record says which worker incarnation):
  ("up", worker, generation, pid)                     a worker (re)started: send it the site table
  ("conn", worker, generation, conn_id, principal, binary)
  ("frame", worker, generation, conn_id, frame)        a decoded, rate-limited client frame
  ("gone", worker, generation, conn_id)
  ("slow", worker, generation, conn_id)               closed as a slow consumer
control → one worker (its delivery ring):
  ("send", conn_ids, json_payload, binary_payload)     binary_payload None when nobody speaks binary
  ("close", conn_id, code, reason, graceful)
  ("sites", {site_id: allowed_origins})                for the origin check before the upgrade
"""

from __future__ import annotations

import pickle
from typing import Any

PROTOCOL = pickle.HIGHEST_PROTOCOL


def encode(*record: Any) -> bytes:
    return pickle.dumps(record, PROTOCOL)


def decode(data: bytes) -> tuple[Any, ...]:
    record = pickle.loads(data)  # written only by our own processes (module docstring)
    if type(record) is not tuple or not record:
        raise ValueError("not a ring record")
    return record
