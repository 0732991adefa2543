"""The pool of inference nodes behind the gateway (``registry.py`` chooses, ``pool.py`` sends).

```
registry.py  NodeRegistry: membership, health checks, least-outstanding choice of a node
pool.py      NodePool (a NodeRegistry): requests, streams and live streams, retries, timeouts
streaming.py a started stream's events: TranscriptDelta …, TranscriptionResult (NDJSON)
live.py      a live stream on a node's online model (WebSocket /v1/transcribe/live)
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
