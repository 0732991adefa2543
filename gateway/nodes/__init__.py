"""The pool of inference nodes behind the gateway (see ``pool.py`` for how it routes).

```
pool.py      NodePool: membership, health checks, least-outstanding routing, retries, timeouts
streaming.py a started stream's events: TranscriptDelta …, TranscriptionResult (NDJSON)
node.py      Node (what the pool knows of one node), NodeStatus (its snapshot)
breaker.py   CircuitBreaker per node: closed → open → half-open → closed
discovery.py NodeDiscovery: the nodes behind the DNS names of GATEWAY_NODES (dns+http://…)
membership.py every replica follows the node registrations and drains kept in the ledger
errors.py    node answers → customer errors; NodeNotFound (404 node_not_found)
```
"""

from __future__ import annotations

from gateway.nodes.breaker import CircuitState
from gateway.nodes.errors import NodeNotFound, node_error
from gateway.nodes.node import NodeSource, NodeStatus
from gateway.nodes.pool import NodePool

__all__ = ["CircuitState", "NodeNotFound", "NodePool", "NodeSource", "NodeStatus", "node_error"]
