"""Operating it: Prometheus metrics parsed with the library's own parser."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import settled, wait_for
from tests.fakes import FakeUpstream


async def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/_gateway/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_what_happened(gateway: Any, upstream: FakeUpstream) -> None:
    await settled(gateway, (await gateway.post("/async/x")).headers["Location"])
    await settled(gateway, (await gateway.get("/async/flaky?fail=1")).headers["Location"])
    await settled(gateway, (await gateway.post("/async/reset")).headers["Location"])
    upstream.gate.clear()
    held = (await gateway.post("/async/held?hold=1")).headers["Location"]
    await wait_for(lambda: upstream.in_flight == 1)
    queued_behind = await gateway.post("/async/behind?hold=1")
    assert queued_behind.status == 202
    during = await scrape(gateway)
    assert during[("gateway_upstream_in_flight", (("upstream", "legacy"),))] >= 1
    assert await gateway.delete("/" + held.split("/", 3)[3]) is not None
    upstream.gate.set()
    await settled(gateway, queued_behind.headers["Location"])

    samples = await scrape(gateway)
    route = ("route", "/async")
    assert samples[("gateway_jobs_accepted_total", (route,))] == 5
    assert samples[("gateway_jobs_ended_total", (("outcome", "completed"), route))] == 3
    assert samples[("gateway_jobs_ended_total", (("outcome", "failed"), route))] == 1
    assert samples[("gateway_jobs_ended_total", (("outcome", "canceled"), route))] == 1
    assert samples[("gateway_upstream_retries_total", (("upstream", "legacy"),))] == 1
    assert samples[("gateway_jobs_queued", (("upstream", "legacy"),))] == 0
    assert samples[("gateway_accept_latency_seconds_count", ())] == 5
    assert samples[("gateway_upstream_latency_seconds_count", (("upstream", "legacy"),))] >= 6
    commits = samples[("gateway_storage_commit_seconds_count", ())]
    operations = samples[("gateway_storage_operations_total", ())]
    assert commits >= 1 and samples[("gateway_storage_commit_seconds_sum", ())] > 0
    assert operations >= 10  # 5 accepts and 5 job ends at least, grouped into transactions
    assert operations >= commits
