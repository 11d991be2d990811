"""The gateway's rate-limit cache: ElastiCache (Valkey), its network, its secret URL and alarms."""

from __future__ import annotations

from typing import Any

import pytest

from mailstack_infra.mocks import StackRecord

GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
PARAMETERS = "aws:elasticache/parameterGroup:ParameterGroup"
SUBNETS = "aws:elasticache/subnetGroup:SubnetGroup"
SG = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
NODE_METRICS = (
    "CPUUtilization",
    "EngineCPUUtilization",
    "DatabaseMemoryUsagePercentage",
    "Evictions",
)


def group(stack: StackRecord) -> dict[str, Any]:
    return dict(stack.one(GROUP, "cache-group").inputs)


def gateway_container(stack: StackRecord) -> dict[str, Any]:
    (definition,) = stack.one(TASK, "gateway-task").json("containerDefinitions")
    return dict(definition)


def cache_alarms(stack: StackRecord, metric: str) -> list[dict[str, Any]]:
    return [
        dict(a.inputs)
        for a in stack.of_type(ALARM)
        if a.inputs["namespace"] == "AWS/ElastiCache" and a.inputs["metricName"] == metric
    ]


def minutes(window: str) -> tuple[int, int]:
    """`hh:mm-hh:mm` or `ddd:hh:mm-ddd:hh:mm` as start and end minutes of the day."""

    def minute(point: str) -> int:
        hours, mins = point.split(":")[-2:]
        return int(hours) * 60 + int(mins)

    start, end = window.split("-")
    return minute(start), minute(end)


@pytest.mark.parametrize("fixture", ["dev", "prod"])
def test_cache_is_encrypted_at_rest_and_requires_tls_with_an_auth_token(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    stack: StackRecord = request.getfixturevalue(fixture)
    inputs = group(stack)
    assert inputs["atRestEncryptionEnabled"] is True
    assert inputs["transitEncryptionEnabled"] is True
    assert inputs["transitEncryptionMode"] == "required"
    token = stack.one("random:index/randomPassword:RandomPassword", "cache-auth-token")
    assert inputs["authToken"] == token.outputs["result"]
    assert "authToken" in stack.one(GROUP, "cache-group").secret_inputs


def test_prod_cache_is_multi_az_with_automatic_failover_across_zones(prod: StackRecord) -> None:
    inputs = group(prod)
    assert inputs["numCacheClusters"] >= 2
    assert inputs["automaticFailoverEnabled"] is True
    assert inputs["multiAzEnabled"] is True
    zones = inputs["preferredCacheClusterAzs"]
    assert len(zones) == inputs["numCacheClusters"]
    assert len(set(zones)) == len(zones)


def test_dev_cache_is_one_node_without_failover(dev: StackRecord) -> None:
    inputs = group(dev)
    assert inputs["numCacheClusters"] == 1
    assert inputs["automaticFailoverEnabled"] is False
    assert inputs["multiAzEnabled"] is False


def test_cache_runs_valkey_with_its_own_parameter_group(prod: StackRecord) -> None:
    inputs = group(prod)
    assert inputs["engine"] == "valkey"
    assert inputs["engineVersion"] == "8.0"
    parameters = prod.one(PARAMETERS, "cache-parameters")
    assert parameters.inputs["family"] == "valkey8"
    assert inputs["parameterGroupName"] == parameters.outputs["name"]
    settings = {p["name"]: p["value"] for p in parameters.inputs["parameters"]}
    assert settings["maxmemory-policy"] == "volatile-ttl"
    assert inputs["autoMinorVersionUpgrade"] is True


def test_cache_sits_in_the_database_subnets(prod: StackRecord) -> None:
    database_subnets = sorted(
        s.id
        for s in prod.of_type("aws:ec2/subnet:Subnet")
        if s.inputs["tags"]["tier"] == "database"
    )
    subnets = prod.one(SUBNETS, "cache-subnets")
    assert sorted(subnets.inputs["subnetIds"]) == database_subnets
    assert group(prod)["subnetGroupName"] == subnets.outputs["name"]


def test_cache_port_is_open_only_to_the_gateway(prod: StackRecord) -> None:
    cache_sg = prod.one(SG, "firewall-cache").id
    gateway_sg = prod.one(SG, "firewall-gateway").id
    assert group(prod)["securityGroupIds"] == [cache_sg]
    assert group(prod)["port"] == 6379
    ingress = [r.inputs for r in prod.of_type(INGRESS) if r.inputs["securityGroupId"] == cache_sg]
    assert [
        (r["referencedSecurityGroupId"], r["fromPort"], r["toPort"], r.get("cidrIpv4"))
        for r in ingress
    ] == [(gateway_sg, 6379, 6379, None)]
    to_cache = [
        r.inputs["securityGroupId"]
        for r in prod.of_type(EGRESS)
        if r.inputs.get("referencedSecurityGroupId") == cache_sg
    ]
    assert to_cache == [gateway_sg]


def test_cache_snapshots_and_maintenance_do_not_overlap(prod: StackRecord) -> None:
    inputs = group(prod)
    assert inputs["snapshotRetentionLimit"] >= 1
    snapshot = minutes(inputs["snapshotWindow"])
    maintenance = minutes(inputs["maintenanceWindow"])
    assert snapshot[0] < snapshot[1]
    assert maintenance[1] - maintenance[0] >= 60
    assert snapshot[1] <= maintenance[0] or maintenance[1] <= snapshot[0]


def test_cache_logs_go_to_groups_with_retention(prod: StackRecord) -> None:
    groups = {g.inputs["name"]: g.inputs for g in prod.of_type("aws:cloudwatch/logGroup:LogGroup")}
    deliveries = group(prod)["logDeliveryConfigurations"]
    assert {d["logType"] for d in deliveries} == {"slow-log", "engine-log"}
    for delivery in deliveries:
        assert delivery["destinationType"] == "cloudwatch-logs"
        assert groups[delivery["destination"]]["retentionInDays"] > 0


@pytest.mark.parametrize("fixture", ["dev", "prod"])
def test_gateway_reads_redis_url_from_a_secret_holding_a_tls_url(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    stack: StackRecord = request.getfixturevalue(fixture)
    definition = gateway_container(stack)
    secret = stack.one(SECRET, "cache-url")
    assert {s["name"]: s["valueFrom"] for s in definition["secrets"]}["REDIS_URL"] == (
        secret.outputs["arn"]
    )
    assert "REDIS_URL" not in {e["name"] for e in definition["environment"]}

    version = stack.one(SECRET_VERSION, "cache-url")
    assert version.inputs["secretId"] == secret.id
    assert "secretString" in version.secret_inputs
    primary = stack.one(GROUP, "cache-group").outputs["primaryEndpointAddress"]
    token = group(stack)["authToken"]
    assert version.inputs["secretString"] == f"rediss://:{token}@{primary}:6379/0"


def test_processor_gets_no_redis_url(prod: StackRecord) -> None:
    (definition,) = prod.one(TASK, "processor-task").json("containerDefinitions")
    names = {e["name"] for e in definition["environment"]} | {
        s["name"] for s in definition["secrets"]
    }
    assert "REDIS_URL" not in names


@pytest.mark.parametrize("fixture", ["dev", "prod"])
def test_every_cache_node_has_cpu_memory_and_eviction_alarms(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    stack: StackRecord = request.getfixturevalue(fixture)
    nodes = set(stack.one(GROUP, "cache-group").outputs["memberClusters"])
    assert len(nodes) == group(stack)["numCacheClusters"]
    topic = stack.one("aws:sns/topic:Topic", "alarms-topic").outputs["arn"]
    for metric in NODE_METRICS:
        alarms = cache_alarms(stack, metric)
        assert {a["dimensions"]["CacheClusterId"] for a in alarms} == nodes, metric
        assert all(a["alarmActions"] == [topic] for a in alarms)
    (evictions, *_) = cache_alarms(stack, "Evictions")
    assert (evictions["statistic"], evictions["threshold"]) == ("Sum", 0)


def test_replication_lag_is_watched_on_every_node_of_a_replicated_cache(
    prod: StackRecord, dev: StackRecord
) -> None:
    nodes = set(prod.one(GROUP, "cache-group").outputs["memberClusters"])
    lag = cache_alarms(prod, "ReplicationLag")
    assert {a["dimensions"]["CacheClusterId"] for a in lag} == nodes
    assert cache_alarms(dev, "ReplicationLag") == []


def test_localstack_has_no_cache(localstack: StackRecord) -> None:
    assert not [r for r in localstack if r.type.startswith("aws:elasticache/")]


def test_cache_endpoint_and_secret_are_stack_outputs(prod: StackRecord) -> None:
    assert (
        prod.outputs["cache_endpoint"]
        == (prod.one(GROUP, "cache-group").outputs["primaryEndpointAddress"])
    )
    assert prod.outputs["redis_url_secret_arn"] == prod.one(SECRET, "cache-url").outputs["arn"]
