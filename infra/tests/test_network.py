"""Checklist rows: VPC, ALB, target group, and the security groups around them."""

from __future__ import annotations

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
    assert writer["Principal"] == {"AWS": "arn:aws:iam::156460612806:root"}


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


def test_target_group_targets_ips_checks_healthz_and_drains_quickly(dev: StackRecord) -> None:
    group = dev.one(TARGET_GROUP, "edge-gateway").inputs
    assert group["targetType"] == "ip"
    assert group["healthCheck"]["path"] == "/healthz"
    assert 10 <= group["deregistrationDelay"] <= 30
    assert "namePrefix" in group
    assert "name" not in group
