"""Checklist rows: VPC, ALB, target group, and the security groups around them."""

from __future__ import annotations

import fnmatch
import json

import pytest

from mailstack_infra.mocks import StackRecord

SUBNET = "aws:ec2/subnet:Subnet"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
ALB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"


def subnets(stack: StackRecord, tier: str) -> list[dict[str, object]]:
    return [dict(s.inputs) for s in stack.of_type(SUBNET) if s.inputs["tags"]["tier"] == tier]


def subnet_ids(stack: StackRecord, tier: str) -> list[str]:
    return [s.id for s in stack.of_type(SUBNET) if s.inputs["tags"]["tier"] == tier]


def test_vpc_spreads_over_the_zones_the_invoke_returned(
    dev: StackRecord, prod: StackRecord
) -> None:
    assert "aws:index/getAvailabilityZones:getAvailabilityZones" in dev.invokes
    assert {s["availabilityZone"] for s in subnets(dev, "app")} == {"eu-west-1a", "eu-west-1b"}
    assert {s["availabilityZone"] for s in subnets(prod, "app")} == {
        "eu-west-1a",
        "eu-west-1b",
        "eu-west-1c",
    }


@pytest.mark.parametrize("tier", ["public", "app", "database"])
def test_every_zone_has_one_subnet_per_tier(prod: StackRecord, tier: str) -> None:
    zones = [s["availabilityZone"] for s in subnets(prod, tier)]
    assert sorted(zones) == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]


def test_subnet_ranges_do_not_overlap(prod: StackRecord) -> None:
    import ipaddress

    ranges = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in prod.of_type(SUBNET)]
    for index, first in enumerate(ranges):
        assert all(not first.overlaps(other) for other in ranges[index + 1 :])


def test_vpc_has_dns_on(dev: StackRecord) -> None:
    vpc = dev.one("aws:ec2/vpc:Vpc", "network-vpc").inputs
    assert vpc["enableDnsHostnames"] is True
    assert vpc["enableDnsSupport"] is True


def test_no_subnet_hands_out_public_ips(prod: StackRecord) -> None:
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in prod.of_type(SUBNET))


def test_prod_has_a_nat_gateway_per_zone_and_dev_has_one(
    dev: StackRecord, prod: StackRecord
) -> None:
    assert len(prod.of_type("aws:ec2/natGateway:NatGateway")) == 3
    assert len(dev.of_type("aws:ec2/natGateway:NatGateway")) == 1
    public = set(subnet_ids(prod, "public"))
    assert {n.inputs["subnetId"] for n in prod.of_type("aws:ec2/natGateway:NatGateway")} == public


def test_app_subnets_route_out_through_the_nat_of_their_zone(prod: StackRecord) -> None:
    routes = [r for r in prod.of_type("aws:ec2/route:Route") if "natGatewayId" in r.inputs]
    assert len({r.inputs["natGatewayId"] for r in routes}) == 3


def test_database_subnets_have_no_route_out(prod: StackRecord) -> None:
    database_rt = prod.one("aws:ec2/routeTable:RouteTable", "network-database-rt")
    assert not [
        r for r in prod.of_type("aws:ec2/route:Route") if r.inputs["routeTableId"] == database_rt.id
    ]


def test_default_security_group_has_no_rules(dev: StackRecord) -> None:
    default = dev.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", "network-default-sg")
    assert default.inputs.get("ingress", []) == []
    assert default.inputs.get("egress", []) == []


def test_flow_logs_capture_all_traffic_into_a_group_with_retention(dev: StackRecord) -> None:
    flow = dev.one("aws:ec2/flowLog:FlowLog", "network-flow-log").inputs
    group = dev.with_output("arn", flow["logDestination"])
    assert flow["trafficType"] == "ALL"
    assert flow["vpcId"] == dev.one("aws:ec2/vpc:Vpc", "network-vpc").id
    assert group.inputs["retentionInDays"] > 0


def test_alb_spans_the_public_subnets(prod: StackRecord) -> None:
    alb = prod.one(ALB, "edge-alb").inputs
    assert sorted(alb["subnets"]) == sorted(subnet_ids(prod, "public"))
    assert alb["internal"] is False


def test_alb_drops_invalid_header_fields(dev: StackRecord) -> None:
    assert dev.one(ALB, "edge-alb").inputs["dropInvalidHeaderFields"] is True


def test_alb_deletion_protection_is_on_in_prod_only(dev: StackRecord, prod: StackRecord) -> None:
    assert prod.one(ALB, "edge-alb").inputs["enableDeletionProtection"] is True
    assert dev.one(ALB, "edge-alb").inputs["enableDeletionProtection"] is False


def test_alb_access_logs_go_to_an_encrypted_private_bucket(prod: StackRecord) -> None:
    logs = prod.one(ALB, "edge-alb").inputs["accessLogs"]
    assert logs["enabled"] is True
    bucket = logs["bucket"]
    encryption = [
        e
        for e in prod.of_type(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
        )
        if e.inputs["bucket"] == bucket
    ]
    assert encryption[0].inputs["rules"][0]["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "AES256"
    }
    policy = next(
        p for p in prod.of_type("aws:s3/bucketPolicy:BucketPolicy") if p.inputs["bucket"] == bucket
    )
    statements = json.loads(policy.inputs["policy"])["Statement"]
    writer = next(s for s in statements if s.get("Sid") == "AllowAlbAccessLogs")
    assert writer["Action"] == "s3:PutObject"
    # The log delivery service principal works in every region; the legacy per-region ELB
    # accounts do not exist in regions opened since August 2022.
    assert writer["Principal"] == {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}
    assert writer["Resource"] == f"arn:aws:s3:::{bucket}/alb/AWSLogs/123456789012/*"


def test_alb_log_bucket_policy_uses_the_partition_of_the_account() -> None:
    from mailstack_infra.load_balancer import access_log_statement

    statement = access_log_statement("logs", "123456789012", "aws-cn")
    assert statement["Resource"] == "arn:aws-cn:s3:::logs/alb/AWSLogs/123456789012/*"


def test_https_listener_uses_tls13_and_http_redirects_to_it(prod: StackRecord) -> None:
    https = prod.one(LISTENER, "edge-https").inputs
    http = prod.one(LISTENER, "edge-http").inputs
    assert https["protocol"] == "HTTPS"
    assert https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert https["certificateArn"].startswith("arn:aws:acm:")
    redirect = http["defaultActions"][0]
    assert redirect["type"] == "redirect"
    assert redirect["redirect"]["port"] == "443"
    assert redirect["redirect"]["protocol"] == "HTTPS"


def test_without_a_certificate_http_forwards_to_the_gateway(dev: StackRecord) -> None:
    assert [listener.name for listener in dev.of_type(LISTENER)] == ["edge-http"]
    action = dev.one(LISTENER, "edge-http").inputs["defaultActions"][0]
    assert action["type"] == "forward"


def test_only_the_alb_is_open_to_the_internet_and_only_on_80_and_443(
    dev: StackRecord, prod: StackRecord
) -> None:
    for stack, ports in ((prod, {80, 443}), (dev, {80})):
        alb_sg = stack.one("aws:ec2/securityGroup:SecurityGroup", "firewall-alb").id
        public = [r.inputs for r in stack.of_type(INGRESS) if r.inputs.get("cidrIpv4")]
        assert {r["securityGroupId"] for r in public} == {alb_sg}
        assert {r["cidrIpv4"] for r in public} == {"0.0.0.0/0"}
        assert {(r["fromPort"], r["toPort"]) for r in public} == {(p, p) for p in ports}


def test_target_group_targets_ips_checks_deep_health_and_drains_quickly(dev: StackRecord) -> None:
    """The ALB probes the gateway's database and schema, so a task whose database is down or
    whose schema is behind takes no traffic."""
    group = dev.one(TARGET_GROUP, "edge-gateway").inputs
    assert group["targetType"] == "ip"
    assert group["healthCheck"]["path"] == "/healthz?deep=1"
    assert group["healthCheck"]["matcher"] == "200"
    assert 10 <= group["deregistrationDelay"] <= 30
    assert "namePrefix" in group
    assert "name" not in group


@pytest.mark.parametrize(("fixture", "listener"), [("dev", "edge-http"), ("prod", "edge-https")])
def test_admin_paths_end_at_the_load_balancer(
    fixture: str, listener: str, request: pytest.FixtureRequest
) -> None:
    stack: StackRecord = request.getfixturevalue(fixture)
    (rule,) = stack.of_type("aws:lb/listenerRule:ListenerRule")
    assert rule.inputs["listenerArn"] == stack.one(LISTENER, listener).outputs["arn"]
    (condition,) = rule.inputs["conditions"]
    assert {"/metrics", "/docs", "/openapi.json"} <= set(condition["pathPattern"]["values"])
    (action,) = rule.inputs["actions"]
    assert action["type"] == "fixed-response"
    assert action["fixedResponse"]["statusCode"] == "404"
    assert json.loads(action["fixedResponse"]["messageBody"])["error"] == "not_found"


def test_alb_idle_timeout_is_shorter_than_the_gateways_keep_alive(dev: StackRecord) -> None:
    """Else the gateway may close a connection the ALB is about to reuse: a sporadic 502."""
    idle = dev.one(ALB, "edge-alb").inputs["idleTimeout"]
    (definition,) = dev.one("aws:ecs/taskDefinition:TaskDefinition", "gateway-task").json(
        "containerDefinitions"
    )
    environment = {e["name"]: e["value"] for e in definition["environment"]}
    assert int(environment["GATEWAY_KEEP_ALIVE_SECONDS"]) > idle


def test_alb_alarms_on_p99_target_response_time(dev: StackRecord) -> None:
    alarm = dev.one("aws:cloudwatch/metricAlarm:MetricAlarm", "edge-response-time-p99").inputs
    assert alarm["metricName"] == "TargetResponseTime"
    assert alarm["extendedStatistic"] == "p99"
    assert "statistic" not in alarm
    assert alarm["dimensions"] == {"LoadBalancer": dev.one(ALB, "edge-alb").outputs["arnSuffix"]}


def test_a_waf_web_acl_guards_the_alb(prod: StackRecord) -> None:
    acl = prod.one("aws:wafv2/webAcl:WebAcl", "waf-acl")
    association = prod.one("aws:wafv2/webAclAssociation:WebAclAssociation", "waf-alb").inputs
    assert association["resourceArn"] == prod.one(ALB, "edge-alb").outputs["arn"]
    assert association["webAclArn"] == acl.outputs["arn"]
    assert acl.inputs["scope"] == "REGIONAL"
    rules = {r["name"]: r for r in acl.inputs["rules"]}
    for group in ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"):
        statement = rules[group]["statement"]["managedRuleGroupStatement"]
        assert (statement["vendorName"], statement["name"]) == ("AWS", group)
    rate = rules["rate-per-ip"]
    assert rate["action"] == {"block": {}}
    assert rate["statement"]["rateBasedStatement"]["aggregateKeyType"] == "IP"
    assert rate["statement"]["rateBasedStatement"]["limit"] == 20_000
    assert len({r["priority"] for r in rules.values()}) == len(rules)


def test_waf_only_counts_the_common_rules_an_email_api_trips_by_design(prod: StackRecord) -> None:
    """Bodies over 8 KB and HTML email bodies are this API's normal payload."""
    acl = prod.one("aws:wafv2/webAcl:WebAcl", "waf-acl").inputs
    (common,) = [r for r in acl["rules"] if r["name"] == "AWSManagedRulesCommonRuleSet"]
    overrides = common["statement"]["managedRuleGroupStatement"]["ruleActionOverrides"]
    assert {o["name"]: o["actionToUse"] for o in overrides} == {
        "SizeRestrictions_BODY": {"count": {}},
        "CrossSiteScripting_BODY": {"count": {}},
    }


def test_waf_logs_what_it_blocks_to_a_group_with_retention(prod: StackRecord) -> None:
    logging = prod.one(
        "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration", "waf-logs"
    ).inputs
    group = prod.with_output("arn", logging["logDestinationConfigs"][0])
    assert group.inputs["name"].startswith("aws-waf-logs-")
    assert group.inputs["retentionInDays"] > 0


def test_s3_is_reached_through_a_gateway_endpoint_from_the_app_subnets(dev: StackRecord) -> None:
    endpoint = dev.one("aws:ec2/vpcEndpoint:VpcEndpoint", "endpoints-s3").inputs
    assert endpoint["vpcEndpointType"] == "Gateway"
    assert endpoint["serviceName"] == "com.amazonaws.eu-west-1.s3"
    app_tables = sorted(
        t.id
        for t in dev.of_type("aws:ec2/routeTable:RouteTable")
        if t.inputs["tags"]["Name"].startswith("mailstack-dev-app-")
    )
    assert sorted(endpoint["routeTableIds"]) == app_tables
    assert [e.name for e in dev.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")] == ["endpoints-s3"]


def test_prod_reaches_the_aws_apis_through_interface_endpoints(prod: StackRecord) -> None:
    endpoints = {
        e.inputs["serviceName"]: e.inputs
        for e in prod.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
        if e.inputs["vpcEndpointType"] == "Interface"
    }
    assert set(endpoints) == {
        f"com.amazonaws.eu-west-1.{service}"
        for service in ("sqs", "secretsmanager", "ecr.api", "ecr.dkr", "logs")
    }
    group = prod.one("aws:ec2/securityGroup:SecurityGroup", "firewall-endpoints").id
    app = sorted(subnet_ids(prod, "app"))
    for endpoint in endpoints.values():
        assert endpoint["privateDnsEnabled"] is True
        assert endpoint["securityGroupIds"] == [group]
        assert sorted(endpoint["subnetIds"]) == app
    callers = {
        r.inputs["referencedSecurityGroupId"]
        for r in prod.of_type(INGRESS)
        if r.inputs["securityGroupId"] == group
    }
    roles = ("gateway", "processor", "jobs", "migrate")
    assert callers == {
        prod.one("aws:ec2/securityGroup:SecurityGroup", f"firewall-{role}").id for role in roles
    }


@pytest.mark.parametrize(
    "path", ["/v1/provider-events/sendgrid", "/v1/provider-events/elasticemail"]
)
def test_provider_events_reach_the_gateway_without_an_auth_header(
    prod: StackRecord, path: str
) -> None:
    """Providers send no API key: no listener rule or WAF rule may ask for one, or stop the path.

    The only listener rule answers the internal paths itself; the WAF has its rate rule and
    AWS's managed groups (no header or path match of its own), whose body-size rule only counts,
    so SendGrid's batches of several MB pass (test above).
    """
    rules = prod.of_type("aws:lb/listenerRule:ListenerRule")
    for rule in rules:
        for condition in rule.inputs["conditions"]:
            assert set(condition) == {"pathPattern"}
            patterns = condition["pathPattern"]["values"]
            assert not [p for p in patterns if fnmatch.fnmatchcase(path, p)]
    acl = prod.one("aws:wafv2/webAcl:WebAcl", "waf-acl").inputs
    assert acl["defaultAction"] == {"allow": {}}
    statements = {kind for r in acl["rules"] for kind in r["statement"]}
    assert statements == {"rateBasedStatement", "managedRuleGroupStatement"}
