"""Cardinality: traffic from 50 more tenants adds no series to the gateway's or the node's
/metrics, nor to what Prometheus stores, and no label carries a tenant or an API key."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.factories import create_tenant_with_key
from tests.observability.conftest import GATEWAY_TOKEN, NODE_TOKEN, Stack

TENANTS = 50
SERIES = 'count({__name__=~"asrgw_.+|asrnode_.+"})'
TRANSCRIPTIONS = 'sum(asrgw_requests_total{route="/v1/audio/transcriptions"})'


def exposed(url: str, token: str) -> list[tuple[str, dict[str, str]]]:
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200
    return [
        (sample.name, sample.labels)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def series_counts(stack: Stack) -> tuple[int, int, int]:
    stack.wait_for_fresh_scrape()
    return (
        len(exposed(stack.gateway_url, GATEWAY_TOKEN)),
        len(exposed(stack.node_url, NODE_TOKEN)),
        int(stack.scalar(SERIES)),
    )


def tenant_traffic(stack: Stack, key: str) -> list[int]:
    """What one tenant does: a transcription, the same again (a cache hit), its usage."""
    first = stack.transcribe(key)
    repeat = stack.transcribe(key)
    usage = httpx.get(
        f"{stack.gateway_url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return [first.status_code, repeat.status_code, usage.status_code]


def test_series_stay_constant_with_the_number_of_tenants(stack: Stack) -> None:
    names = [f"cardinality-{index:02d}" for index in range(TENANTS + 2)]
    keys = {name: create_tenant_with_key(stack.database, name) for name in names}
    # Two tenants first: every kind of request the fifty make has been seen once.
    for name in names[:2]:
        assert tenant_traffic(stack, keys[name]) == [200, 200, 200]
    before = series_counts(stack)
    sent_before = stack.scalar(TRANSCRIPTIONS)

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda name: tenant_traffic(stack, keys[name]), names[2:]))
    assert outcomes == [[200, 200, 200]] * TENANTS
    stack.wait_for(TRANSCRIPTIONS, lambda sent: sent >= sent_before + 2 * TENANTS)
    after = series_counts(stack)

    assert after == before
    gateway_labels = exposed(stack.gateway_url, GATEWAY_TOKEN)
    for _name, labels in gateway_labels:
        for label_value in labels.values():
            assert not label_value.startswith("cardinality-"), labels
            assert not any(key[:21] in label_value for key in keys.values()), labels
