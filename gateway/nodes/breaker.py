"""The passive circuit breaker of one node.

```
closed ──N consecutive failures──▶ open ──cooldown──▶ half_open ──trial succeeds──▶ closed
                                    ▲                     │
                                    └──trial fails────────┘
```

Half-open lets exactly one trial request through; the others keep skipping the node until the
trial's answer decides.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

Clock = Callable[[], float]


class CircuitState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class CircuitBreaker:
    def __init__(self, failure_threshold: int, open_seconds: float, clock: Clock) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self.consecutive_failures = 0
        self._clock = clock
        self._open_until: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> CircuitState:
        if self._open_until is None:
            return CircuitState.closed
        if self._clock() < self._open_until:
            return CircuitState.open
        return CircuitState.half_open

    def seconds_until_half_open(self) -> float | None:
        """How long the circuit stays open; None when it is not open."""
        if self.state is not CircuitState.open:
            return None
        assert self._open_until is not None
        return self._open_until - self._clock()

    def allows_request(self) -> bool:
        state = self.state
        if state is CircuitState.half_open:
            return not self._trial_in_flight
        return state is CircuitState.closed

    def on_dispatch(self) -> None:
        """A request is sent: in half-open it is the trial, and the only one."""
        if self.state is CircuitState.half_open:
            self._trial_in_flight = True

    def on_finish(self) -> None:
        """A request ended, whatever its outcome (an abandoned trial must not block the node)."""
        self._trial_in_flight = False

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self._open_until = None

    def record_failure(self) -> bool:
        """Count a failure; True when this one opened the circuit."""
        self.consecutive_failures += 1
        state = self.state
        if state is CircuitState.open:
            # A straggler sent before the circuit opened: the cooldown already runs.
            return False
        if state is CircuitState.half_open or self.consecutive_failures >= self.failure_threshold:
            self._open_until = self._clock() + self.open_seconds
            return True
        return False
