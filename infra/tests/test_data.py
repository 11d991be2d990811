"""Checklist rows: SQS, RDS primary and replicas, the S3 buckets and the secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailstack_infra.mocks import StackRecord

REPO_ROOT = Path(__file__).resolve().parents[2]

QUEUE = "aws:sqs/queue:Queue"
RDS = "aws:rds/instance:Instance"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG = "aws:ec2/securityGroup:SecurityGroup"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
PROVIDER_TIMEOUT_SECONDS = 3
PROVIDERS = 2


def alarms_on(stack: StackRecord, metric: str) -> list[dict[str, Any]]:
    return [dict(a.inputs) for a in stack.of_type(ALARM) if a.inputs["metricName"] == metric]


def test_queues_are_encrypted(dev: StackRecord) -> None:
    assert all(q.inputs["sqsManagedSseEnabled"] is True for q in dev.of_type(QUEUE))


def test_queue_dead_letters_after_five_receives(dev: StackRecord) -> None:
    queue = dev.one(QUEUE, "email-queue-queue")
    dlq = dev.one(QUEUE, "email-queue-dlq")
    assert json.loads(queue.inputs["redrivePolicy"]) == {
        "deadLetterTargetArn": dlq.outputs["arn"],
        "maxReceiveCount": 5,
    }


def test_dlq_accepts_redrives_from_the_email_queue_only(dev: StackRecord) -> None:
    allow = dev.one(
        "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy", "email-queue-dlq-redrive-allow"
    )
    assert allow.inputs["queueUrl"] == dev.one(QUEUE, "email-queue-dlq").outputs["url"]
    assert json.loads(allow.inputs["redriveAllowPolicy"]) == {
        "redrivePermission": "byQueue",
        "sourceQueueArns": [dev.one(QUEUE, "email-queue-queue").outputs["arn"]],
    }


def test_dlq_keeps_messages_fourteen_days_longer_than_the_queue(dev: StackRecord) -> None:
    queue = dev.one(QUEUE, "email-queue-queue").inputs
    dlq = dev.one(QUEUE, "email-queue-dlq").inputs
    assert dlq["messageRetentionSeconds"] == 14 * 24 * 3600
    assert dlq["messageRetentionSeconds"] > queue["messageRetentionSeconds"]


def test_visibility_timeout_outlasts_the_worst_case_handling(dev: StackRecord) -> None:
    worst_case = PROVIDER_TIMEOUT_SECONDS * PROVIDERS
    assert dev.one(QUEUE, "email-queue-queue").inputs["visibilityTimeoutSeconds"] > worst_case * 2


def test_queue_long_polls_for_twenty_seconds(dev: StackRecord) -> None:
    assert dev.one(QUEUE, "email-queue-queue").inputs["receiveWaitTimeSeconds"] == 20


def test_alarms_watch_dlq_depth_and_oldest_message_age(dev: StackRecord) -> None:
    dlq_name = dev.one(QUEUE, "email-queue-dlq").outputs["name"]
    queue_name = dev.one(QUEUE, "email-queue-queue").outputs["name"]
    depth = alarms_on(dev, "ApproximateNumberOfMessagesVisible")
    assert [(a["dimensions"], a["threshold"], a["comparisonOperator"]) for a in depth] == [
        ({"QueueName": dlq_name}, 0, "GreaterThanThreshold")
    ]
    age = alarms_on(dev, "ApproximateAgeOfOldestMessage")
    assert [a["dimensions"] for a in age] == [{"QueueName": queue_name}]


def test_postgres_major_version_is_pinned(prod: StackRecord) -> None:
    primary = prod.one(RDS, "database-primary").inputs
    assert primary["engine"] == "postgres"
    assert primary["engineVersion"] == "17"
    family = prod.one("aws:rds/parameterGroup:ParameterGroup", "database-parameters").inputs
    assert family["family"] == "postgres17"


def test_primary_is_multi_az_encrypted_and_protected_in_prod(prod: StackRecord) -> None:
    primary = prod.one(RDS, "database-primary").inputs
    assert primary["multiAz"] is True
    assert primary["storageEncrypted"] is True
    assert primary["deletionProtection"] is True


def test_primary_keeps_backups_and_a_final_snapshot(prod: StackRecord, dev: StackRecord) -> None:
    for stack in (prod, dev):
        primary = stack.one(RDS, "database-primary").inputs
        assert primary["backupRetentionPeriod"] >= 7
        assert primary["skipFinalSnapshot"] is False
        assert primary["finalSnapshotIdentifier"]


def test_primary_storage_is_gp3_and_grows_by_itself(dev: StackRecord) -> None:
    primary = dev.one(RDS, "database-primary").inputs
    assert primary["storageType"] == "gp3"
    assert primary["maxAllocatedStorage"] > primary["allocatedStorage"]


def test_every_instance_has_insights_monitoring_and_log_exports(prod: StackRecord) -> None:
    for instance in prod.of_type(RDS):
        inputs = instance.inputs
        assert inputs["performanceInsightsEnabled"] is True
        assert inputs["monitoringInterval"] > 0
        role = prod.with_output("arn", inputs["monitoringRoleArn"])
        assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {
            "Service": "monitoring.rds.amazonaws.com"
        }
        assert set(inputs["enabledCloudwatchLogsExports"]) == {"postgresql", "upgrade"}


def test_exported_rds_logs_land_in_groups_with_retention(prod: StackRecord) -> None:
    groups = {g.inputs["name"]: g.inputs for g in prod.of_type("aws:cloudwatch/logGroup:LogGroup")}
    for instance in prod.of_type(RDS):
        for export in instance.inputs["enabledCloudwatchLogsExports"]:
            name = f"/aws/rds/instance/{instance.inputs['identifier']}/{export}"
            assert groups[name]["retentionInDays"] > 0


def test_no_instance_is_public_and_all_sit_in_database_subnets(prod: StackRecord) -> None:
    group = prod.one("aws:rds/subnetGroup:SubnetGroup", "database-subnets").inputs
    database_subnets = sorted(
        s.id
        for s in prod.of_type("aws:ec2/subnet:Subnet")
        if s.inputs["tags"]["tier"] == "database"
    )
    assert sorted(group["subnetIds"]) == database_subnets
    for instance in prod.of_type(RDS):
        assert instance.inputs["publiclyAccessible"] is False


def ingress_peers(stack: StackRecord, group: str) -> set[str]:
    """The groups that may open port 5432 on `group`, and nobody by address."""
    sg = stack.one(SG, f"firewall-{group}").id
    rules = [r.inputs for r in stack.of_type(INGRESS) if r.inputs["securityGroupId"] == sg]
    assert all((r["fromPort"], r["toPort"]) == (5432, 5432) for r in rules)
    assert not any(r.get("cidrIpv4") for r in rules)
    return {r["referencedSecurityGroupId"] for r in rules}


def group_ids(stack: StackRecord, *roles: str) -> set[str]:
    return {stack.one(SG, f"firewall-{role}").id for role in roles}


def test_postgres_port_is_open_to_the_proxy_migrations_and_replica_reads(
    prod: StackRecord,
) -> None:
    assert ingress_peers(prod, "database") == group_ids(prod, "proxy", "migrate", "gateway")
    for instance in prod.of_type(RDS):
        assert instance.inputs["vpcSecurityGroupIds"] == [prod.one(SG, "firewall-database").id]


def test_the_proxy_admits_the_services_and_the_jobs_only(prod: StackRecord) -> None:
    assert ingress_peers(prod, "proxy") == group_ids(prod, "gateway", "processor", "jobs")


def test_parameter_group_forces_tls(prod: StackRecord) -> None:
    group = prod.one("aws:rds/parameterGroup:ParameterGroup", "database-parameters")
    parameters = {p["name"]: p["value"] for p in group.inputs["parameters"]}
    assert parameters["rds.force_ssl"] == "1"
    for instance in prod.of_type(RDS):
        assert instance.inputs["parameterGroupName"] == group.outputs["name"]


def test_password_is_generated_so_replicas_are_possible(prod: StackRecord) -> None:
    primary = prod.one(RDS, "database-primary")
    assert "manageMasterUserPassword" not in primary.inputs
    assert "password" in primary.secret_inputs
    password = prod.one("random:index/randomPassword:RandomPassword", "database-password")
    assert primary.inputs["password"] == password.outputs["result"]


def test_replicas_follow_the_primary_in_their_own_zones(prod: StackRecord) -> None:
    primary = prod.one(RDS, "database-primary")
    replicas = [r for r in prod.of_type(RDS) if r.name.startswith("database-replica")]
    assert len(replicas) == 2
    for replica in replicas:
        assert replica.inputs["replicateSourceDb"] == primary.outputs["identifier"]
        assert replica.inputs["storageEncrypted"] is True
        assert replica.inputs["deletionProtection"] is True
    zones = [r.inputs["availabilityZone"] for r in replicas]
    assert len(set(zones)) == len(zones)


def test_dev_has_no_replicas_by_default(dev: StackRecord) -> None:
    assert [r.name for r in dev.of_type(RDS)] == ["database-primary"]


def test_every_replica_has_a_lag_alarm(prod: StackRecord) -> None:
    replica_ids = {
        r.outputs["identifier"] for r in prod.of_type(RDS) if r.name.startswith("database-replica")
    }
    lagging = {a["dimensions"]["DBInstanceIdentifier"] for a in alarms_on(prod, "ReplicaLag")}
    assert lagging == replica_ids


def test_services_connect_as_the_app_user_through_the_proxy_with_verified_tls(
    prod: StackRecord,
) -> None:
    proxy = prod.one("aws:rds/proxy:Proxy", "database-proxy-proxy").outputs["endpoint"]
    replica = prod.one(RDS, "database-replica-1").outputs["address"]
    password = prod.one(RANDOM_PASSWORD, "database-app-password").outputs["result"]
    url = prod.one(SECRET_VERSION, "rds-database-url")
    read_url = prod.one(SECRET_VERSION, "rds-database-read-url")
    assert url.inputs["secretString"] == (
        f"postgresql+psycopg://mailstack_app:{password}@{proxy}:5432/mailstack?sslmode=verify-full"
    )
    assert read_url.inputs["secretString"] == (
        f"postgresql+psycopg://mailstack_app:{password}@{replica}:5432/mailstack"
        "?sslmode=verify-full"
    )
    assert "secretString" in url.secret_inputs
    assert "secretString" in read_url.secret_inputs


def test_without_replicas_reads_go_through_the_proxy_too(dev: StackRecord) -> None:
    url = dev.one(SECRET_VERSION, "rds-database-url").inputs["secretString"]
    assert dev.one(SECRET_VERSION, "rds-database-read-url").inputs["secretString"] == url
    assert ".proxy-" in url


def test_the_master_url_is_kept_for_the_migration_task_alone(prod: StackRecord) -> None:
    primary = prod.one(RDS, "database-primary")
    master = prod.one(RANDOM_PASSWORD, "database-password").outputs["result"]
    admin = prod.one(SECRET_VERSION, "database-database-admin-url")
    assert admin.inputs["secretString"] == (
        f"postgresql+psycopg://mailstack:{master}@{primary.outputs['address']}:5432/mailstack"
        "?sslmode=verify-full"
    )
    assert primary.inputs["username"] == "mailstack"
    admin_arn = prod.one("aws:secretsmanager/secret:Secret", "database-database-admin-url")
    readers = [
        p.name
        for p in prod.of_type("aws:iam/rolePolicy:RolePolicy")
        if admin_arn.outputs["arn"] in p.inputs["policy"]
    ]
    assert readers == ["migrate-execution"]


def test_the_proxy_reads_the_app_users_credentials_and_requires_tls(prod: StackRecord) -> None:
    proxy = prod.one("aws:rds/proxy:Proxy", "database-proxy-proxy").inputs
    credentials = prod.one("aws:secretsmanager/secret:Secret", "database-database-app-credentials")
    password = prod.one(RANDOM_PASSWORD, "database-app-password").outputs["result"]
    value = prod.one(SECRET_VERSION, "database-database-app-credentials").inputs["secretString"]
    assert json.loads(value) == {"username": "mailstack_app", "password": password}
    assert proxy["requireTls"] is True
    assert proxy["engineFamily"] == "POSTGRESQL"
    assert [a["secretArn"] for a in proxy["auths"]] == [credentials.outputs["arn"]]
    role = prod.with_output("arn", proxy["roleArn"])
    (granted,) = prod.one("aws:iam/rolePolicy:RolePolicy", role.name).json("policy")["Statement"]
    assert granted["Resource"] == [credentials.outputs["arn"]]
    target = prod.one("aws:rds/proxyTarget:ProxyTarget", "database-proxy-primary").inputs
    assert target["dbInstanceIdentifier"] == prod.one(RDS, "database-primary").outputs["identifier"]


def test_max_connections_is_set_from_the_instance_class(
    dev: StackRecord, prod: StackRecord
) -> None:
    for stack, expected in ((dev, 84), (prod, 675)):
        group = stack.one("aws:rds/parameterGroup:ParameterGroup", "database-parameters")
        parameters = {p["name"]: p for p in group.inputs["parameters"]}
        assert parameters["max_connections"]["value"] == str(expected)
        assert parameters["max_connections"]["applyMethod"] == "pending-reboot"
        assert stack.outputs["database_max_connections"] == expected


def test_every_task_at_maximum_scale_during_a_deployment_fits_the_proxys_share(
    prod: StackRecord,
) -> None:
    """Pools: (gateway 12 + processor 20 tasks) x 2 (a rolling deployment) x pool, plus the
    jobs, never exceed what the proxy may open (75% of max_connections)."""
    targets = prod.one(
        "aws:rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup", "database-proxy-targets"
    )
    share = targets.inputs["connectionPoolConfig"]["maxConnectionsPercent"]
    proxy_connections = 675 * share // 100

    def pool(service: str) -> int:
        (definition,) = prod.one("aws:ecs/taskDefinition:TaskDefinition", f"{service}-task").json(
            "containerDefinitions"
        )
        return int({e["name"]: e["value"] for e in definition["environment"]}["DATABASE_POOL_SIZE"])

    demand = 2 * (12 * pool("gateway") + 20 * pool("processor")) + 4
    assert demand <= proxy_connections


def test_connection_alarm_follows_max_connections(dev: StackRecord, prod: StackRecord) -> None:
    for stack, expected in ((dev, 67), (prod, 540)):
        alarms = [a for a in alarms_on(stack, "DatabaseConnections")]
        assert alarms
        assert {a["threshold"] for a in alarms} == {expected}


def test_final_snapshot_names_change_with_the_instance(prod: StackRecord) -> None:
    primary = prod.one(RDS, "database-primary").inputs
    suffix = prod.one("random:index/randomId:RandomId", "database-final-snapshot")
    assert primary["finalSnapshotIdentifier"] == f"mailstack-prod-db-final-{suffix.outputs['hex']}"
    assert suffix.inputs["keepers"]["identifier"] == "mailstack-prod-db"


def test_prod_backs_the_primary_up_with_aws_backup(prod: StackRecord, dev: StackRecord) -> None:
    selection = prod.one("aws:backup/selection:Selection", "database-backup-selection").inputs
    assert selection["resources"] == [prod.one(RDS, "database-primary").outputs["arn"]]
    plan = prod.one("aws:backup/plan:Plan", "database-backup-plan").inputs
    (rule,) = plan["rules"]
    assert rule["schedule"].startswith("cron(")
    assert rule["lifecycle"]["deleteAfter"] >= 30
    role = prod.with_output("arn", selection["iamRoleArn"])
    assert role.json("assumeRolePolicy")["Statement"][0]["Principal"] == {
        "Service": "backup.amazonaws.com"
    }
    assert dev.of_type("aws:backup/plan:Plan") == []


@pytest.mark.parametrize(
    ("type_", "name"),
    [
        (RDS, "database-primary"),
        ("aws:s3/bucket:Bucket", "archive"),
        ("aws:secretsmanager/secret:Secret", "secrets-database-url"),
        ("aws:secretsmanager/secret:Secret", "secrets-elasticemail-api-key"),
        ("aws:secretsmanager/secret:Secret", "database-database-admin-url"),
        ("aws:secretsmanager/secret:Secret", "cache-url"),
    ],
)
def test_prod_data_and_secrets_are_protected_and_retained(
    prod: StackRecord, dev: StackRecord, type_: str, name: str
) -> None:
    assert (prod.one(type_, name).protect, prod.one(type_, name).retain_on_delete) == (True, True)
    assert (dev.one(type_, name).protect, dev.one(type_, name).retain_on_delete) == (False, False)


def test_rds_alarms_cover_cpu_storage_connections_memory_and_latency(prod: StackRecord) -> None:
    primary = prod.one(RDS, "database-primary").outputs["identifier"]
    for metric in (
        "CPUUtilization",
        "FreeStorageSpace",
        "DatabaseConnections",
        "FreeableMemory",
        "ReadLatency",
        "WriteLatency",
    ):
        watched = {
            a["dimensions"].get("DBInstanceIdentifier")
            for a in alarms_on(prod, metric)
            if a["namespace"] == "AWS/RDS"
        }
        assert primary in watched


def _bucket(stack: StackRecord, type_: str, name: str = "archive") -> dict[str, Any]:
    bucket = stack.one("aws:s3/bucket:Bucket", name).outputs["bucket"]
    matches = [r.inputs for r in stack.of_type(type_) if r.inputs["bucket"] == bucket]
    assert len(matches) == 1
    return dict(matches[0])


BUCKETS = ["archive", "attachments"]


@pytest.mark.parametrize("name", BUCKETS)
def test_buckets_block_all_public_access(dev: StackRecord, name: str) -> None:
    block = _bucket(dev, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", name)
    assert all(
        block[key] is True
        for key in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        )
    )


@pytest.mark.parametrize("name", BUCKETS)
def test_buckets_are_encrypted_and_versioned(dev: StackRecord, name: str) -> None:
    encryption = _bucket(
        dev,
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        name,
    )
    assert encryption["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    versioning = _bucket(dev, "aws:s3/bucketVersioning:BucketVersioning", name)
    assert versioning["versioningConfiguration"]["status"] == "Enabled"


def test_archive_moves_to_glacier_then_expires(dev: StackRecord) -> None:
    (rule,) = _bucket(dev, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")[
        "rules"
    ]
    assert rule["status"] == "Enabled"
    assert rule["transitions"][0]["storageClass"] == "GLACIER"
    assert rule["expiration"]["days"] > rule["transitions"][0]["days"]


def test_attachments_expire_after_the_days_resources_json_sets(dev: StackRecord) -> None:
    (rule,) = _bucket(
        dev,
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
        "attachments",
    )["rules"]
    expected = json.loads((REPO_ROOT / "config" / "resources.json").read_text())
    assert rule["status"] == "Enabled"
    assert rule["expiration"]["days"] == expected["attachments_bucket"]["expire_after_days"]
    assert "transitions" not in rule or not rule["transitions"]


@pytest.mark.parametrize("name", BUCKETS)
def test_buckets_enforce_owner_and_tls(dev: StackRecord, name: str) -> None:
    ownership = _bucket(dev, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", name)
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    policy = json.loads(_bucket(dev, "aws:s3/bucketPolicy:BucketPolicy", name)["policy"])
    deny = policy["Statement"][0]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_one_secret_per_provider_key_and_for_the_database_and_cache(dev: StackRecord) -> None:
    names = sorted(s.inputs["name"] for s in dev.of_type("aws:secretsmanager/secret:Secret"))
    assert names == [
        "mailstack-dev/database-admin-url",
        "mailstack-dev/database-app-credentials",
        "mailstack-dev/database-read-url",
        "mailstack-dev/database-url",
        "mailstack-dev/elasticemail-api-key",
        "mailstack-dev/redis-url",
        "mailstack-dev/sendgrid-api-key",
    ]


def test_every_secret_has_a_value_so_no_task_waits_on_an_empty_one(dev: StackRecord) -> None:
    secrets = {s.id for s in dev.of_type("aws:secretsmanager/secret:Secret")}
    filled = {v.inputs["secretId"] for v in dev.of_type(SECRET_VERSION)}
    assert secrets == filled


def test_provider_key_values_come_only_from_secret_config(prod: StackRecord) -> None:
    for key in ("elasticemail-api-key", "sendgrid-api-key"):
        version = prod.one(SECRET_VERSION, f"secrets-{key}")
        assert "secretString" in version.secret_inputs
