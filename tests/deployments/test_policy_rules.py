"""The lifecycle policies' rules without a scheduler: the restart decision, launch options, the
catalog's policy fields, activity accounting, renewal timing and the policy view."""
from __future__ import annotations

from dataclasses import replace

import pytest

from jupyter_osire_llm.core.catalog import parse_catalog
from jupyter_osire_llm.proxy.endpoints import Endpoint
from jupyter_osire_llm.errors import LimitExceeded, RequestError
from jupyter_osire_llm.schedulers.base import JobInfo, JobState
from jupyter_osire_llm.deployments.states import (FAILED, QUEUED, READY, STARTING, Deployment, Replica,
                                      apply_job_info, deployment_state)
from jupyter_osire_llm.server.settings import Timing
from service_factory import make_context, one_model_catalog


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def policies(tmp_path):
    clock = Clock()
    return make_context(tmp_path, one_model_catalog("true"), max_restarts=2, restart_backoff=10,
                        idle_timeout=60, timing=Timing(clock=clock)).policies


def policies_with(tmp_path, **settings):
    return make_context(tmp_path, one_model_catalog("true"), **settings).policies


def deployment(*replicas: Replica, **extra) -> Deployment:
    return Deployment(id="d1", model="m", created=1.0, resources={"time": "2"},
                      replicas=replicas, **extra)


def crashed(replica: Replica) -> Replica:
    info = JobInfo(replica.job_id or "1", JobState.FAILED, exit_code=137)
    return apply_job_info(replica, info, stop_requested=False)


def test_a_crash_waits_then_restarts_with_the_reason(policies):
    before = Replica(0, "/f", job_id="7", state=READY, ready_at=1.0, started_at=1.0)
    after = policies.service.on_failure(deployment(before), before, crashed(before))
    assert after.state == QUEUED and after.job_id is None and after.restarts == 1
    assert after.restart_at == policies.clock() + 10 and after.waiting_restart
    assert after.failures == ("engine crashed (killed by signal 9)",)
    assert after.reason == "restart 1 of 2 in 10 s after: engine crashed (killed by signal 9)"
    assert after.ready_at is None and after.started_at is None
    # waiting for a restart is neither an interrupted submission nor a job to query
    assert deployment_state([after], False) == (QUEUED, after.reason)

    again = replace(after, job_id="8", state=READY, ready_at=2.0, restart_at=None)
    second = policies.service.on_failure(deployment(again), again, crashed(again))
    assert second.restarts == 2 and second.reason.startswith("restart 2 of 2 in 20 s")
    third = replace(second, job_id="9", state=READY, ready_at=3.0, restart_at=None)
    final = policies.service.on_failure(deployment(third), third, crashed(third))
    assert final.state == FAILED and "all 2 restart(s) used" in final.reason


def test_the_same_start_up_failure_twice_is_not_retried(policies):
    first = Replica(0, "/f", job_id="7", state=STARTING)
    info = JobInfo("7", JobState.FAILED, exit_code=3)
    waiting = policies.service.on_failure(deployment(first), first,
                                  apply_job_info(first, info, stop_requested=False))
    assert waiting.state == QUEUED
    resubmitted = replace(waiting, job_id="8", state=STARTING, restart_at=None)
    failed = policies.service.on_failure(deployment(resubmitted), resubmitted,
                                 apply_job_info(resubmitted, replace(info, job_id="8"),
                                                stop_requested=False))
    assert failed.state == FAILED and "same failure at start-up" in failed.reason


def test_no_restart_when_stopped_cancelled_outside_or_renewed(policies):
    r = Replica(0, "/f", job_id="7", state=READY, ready_at=1.0)
    assert policies.service.on_failure(deployment(r, stop_requested=True), r, crashed(r)).state == FAILED
    cancelled = apply_job_info(r, JobInfo("7", JobState.CANCELLED), stop_requested=False)
    assert policies.service.on_failure(deployment(r), r, cancelled).state == FAILED
    successor = Replica(1, "/g", job_id="8", replaces=0)
    assert policies.service.on_failure(deployment(r, successor), r, crashed(r)).state == FAILED


def test_a_retired_replica_ends_stopped_with_its_reason():
    r = Replica(0, "/f", job_id="7", state=READY, retire="scaled down", retire_at=1.0)
    ended = apply_job_info(r, JobInfo("7", JobState.CANCELLED), stop_requested=False)
    assert ended.state == "stopped" and ended.reason == "scaled down"
    active = Replica(1, "/g", job_id="8", state=QUEUED, reason="Resources")
    assert deployment_state([r, active], False)[0] == READY          # still serving
    assert deployment_state([ended, active], False) == (QUEUED, "Resources")


def test_old_rows_load_with_policy_defaults():
    doc = {"id": "d", "model": "m", "created": 1.0, "resources": {}, "state": "ready",
           "replicas": [{"index": 0, "folder": "/f", "state": "ready"}]}
    d = Deployment.from_doc(doc, 0)
    assert d.pinned is False and d.idle_timeout is None and d.replicas[0].restarts == 0
    assert d.replicas[0].failures == ()


def test_launch_options(policies, tmp_path):
    assert policies.launch_options({"idle_timeout": 90, "pinned": True}) == \
        {"idle_timeout": 90.0, "pinned": True}
    for bad in ({"idle_timeout": -1}, {"idle_timeout": "5"}, {"pinned": "yes"}):
        with pytest.raises(RequestError) as info:
            policies.launch_options(bad)
        assert info.value.field in bad
    strict = policies_with(tmp_path / "strict", allow_pinned=False, max_idle_timeout=600)
    for refused in ({"pinned": True}, {"idle_timeout": 0}, {"idle_timeout": 601}):
        with pytest.raises(LimitExceeded):
            strict.launch_options(refused)


def test_catalog_policy_fields():
    catalog = parse_catalog({
        "engines": {"e": {"command": "x", "kind": "openai", "insecure": True,
                          "readiness": "health"}},
        "models": [{"name": "a", "model": "/a", "engine": "e", "idle_timeout": 120,
                    "pinned": True},
                   {"name": "b", "model": "/b", "engine": "e", "idle_timeout": "soon"}]})
    assert catalog.models["a"].idle_timeout == 120 and catalog.models["a"].pinned
    assert catalog.models["a"].engine.readiness == "health"
    assert catalog.models["a"].public()["pinned"] is True
    assert "idle_timeout" in catalog.problems[0]
    bad = parse_catalog({"engines": {"e": {"command": "x", "insecure": True,
                                           "readiness": "vibes"}}})
    assert "readiness" in bad.problems[0]


def test_activity_counts_until_the_end_and_idle_since(policies):
    router, clock = policies.router, policies.clock
    endpoint = Endpoint(model="m", url="https://n:1", key="k", deployment_id="d1", replica="7")
    router.begin_use(endpoint)
    assert router.busy("d1") == 1 and router.last_used("d1") is None
    clock.now += 5
    router.end_use(endpoint)
    assert router.busy("d1") == 0 and router.last_used("d1") == clock.now

    r = Replica(0, "/f", job_id="7", state=READY, ready_at=clock.now - 100)
    d = deployment(r, last_used=clock.now - 50)
    assert policies.idle_since(d) == clock.now            # the local end is newer
    router.begin_use(endpoint)
    assert policies.idle_since(d) is None                 # busy: never idle
    view = policies.view(d, clock.now)
    assert view["idle_timeout"] == 60 and view["idle_stop_in"] is None
    router.end_use(endpoint)
    clock.now += 20
    assert policies.view(d, clock.now)["idle_stop_in"] == 40


def test_renewal_is_due_before_the_limit_but_never_at_once(policies, tmp_path):
    r = Replica(0, "/f", job_id="7", state=READY, started_at=1000.0)
    d = deployment(r)                                  # time "2": 120 s
    assert policies._renew_at(d, r) == 1000.0 + 120 - 60   # renew_before 600 capped at half
    short = policies_with(tmp_path / "short", renew_before=30)
    assert short._renew_at(d, r) == 1000.0 + 90
    assert policies_with(tmp_path / "none", renew_before=0)._renew_at(d, r) is None


def test_on_demand_and_scale_up_say_which_limit_stops_them(tmp_path):
    import asyncio
    catalog = parse_catalog({
        "engines": {"e": {"command": "bash -c 'sleep 60'", "kind": "openai", "guard": False,
                          "key_env": "VLLM_API_KEY", "insecure": True}},
        "models": [{"name": "g", "model": "/g", "engine": "e", "resources": {"gpus": 1}}]})
    from jupyter_osire_llm.schedulers.local import LocalScheduler
    context = make_context(tmp_path, catalog, LocalScheduler(tmp_path / "local", gpus=2),
                           max_total_gpus=1, max_deployments=1, launch_on_demand=True)
    service, policies = context.service, context.policies

    async def scenario() -> None:
        d = await service.launch("g")
        try:
            with pytest.raises(LimitExceeded) as info:
                await policies.scale(d.id, 2)                  # a second GPU: over the limit
            assert "max_total_gpus" == info.value.field and "1 GPUs per user" in \
                info.value.message
            assert len(service.get(d.id).replicas) == 1          # nothing added or submitted
            await service.stop(d.id)
            other = make_context(tmp_path / "other", catalog, max_deployments=0,
                                 launch_on_demand=True)
            service2 = other.service
            with pytest.raises(LimitExceeded) as info:
                await other.on_demand.before_request("g")
            assert "cannot be launched on demand" in info.value.message
            assert service2.all() == []
        finally:
            for job in service.live_jobs():
                service.scheduler.cancel(job[2])

    asyncio.run(scenario())


def test_the_view_shows_a_queued_replacement_and_a_draining_replica(policies):
    now = policies.clock()
    old = Replica(0, "/f", job_id="7", state=READY, started_at=now - 70, ready_at=now - 68)
    queued = Replica(1, "/g", job_id="8", state=QUEUED, reason="Resources", replaces=0)
    view = policies.view(deployment(old, queued), now)
    assert view["renewal"] == "replica 0 near its time limit; replacement 1 queued: Resources"
    assert view["replicas_wanted"] == 1
    draining = replace(old, retire="replaced by replica 1 before its time limit",
                       retire_at=now)
    view = policies.view(deployment(draining, replace(queued, state=READY, reason=None)), now)
    assert view["renewal"].startswith("replica 0 draining (replaced by replica 1")
