"""The VPC: public, app and database subnets per AZ, NAT, flow logs and a closed default SG."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mailstack_infra.iam import Statement, policy_document, trust_policy


@dataclass(frozen=True)
class NetworkArgs:
    """What the network needs to know."""

    prefix: str
    cidr: str
    availability_zones: Sequence[str]
    nat_per_az: bool
    log_retention_days: int
    account_id: pulumi.Input[str]


def carve_subnets(cidr: str, zones: int) -> dict[str, list[str]]:
    """Split the VPC range into /20 blocks: public, app and database tiers, one block per AZ."""
    blocks = [str(block) for block in ipaddress.ip_network(cidr).subnets(new_prefix=20)]
    return {
        "public": blocks[0:zones],
        "app": blocks[4 : 4 + zones],
        "database": blocks[8 : 8 + zones],
    }


class Network(pulumi.ComponentResource):
    """A VPC across two or three AZs with three subnet tiers."""

    vpc: aws.ec2.Vpc
    public_subnet_ids: list[pulumi.Output[str]]
    app_subnet_ids: list[pulumi.Output[str]]
    database_subnet_ids: list[pulumi.Output[str]]
    app_route_table_ids: list[pulumi.Output[str]]

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        zones = list(args.availability_zones)
        ranges = carve_subnets(args.cidr, len(zones))

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{args.prefix}-vpc"},
            opts=child,
        )
        # Taking over the default SG with no rules closes the door it would otherwise leave open.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=self.vpc.id,
            ingress=[],
            egress=[],
            tags={"Name": f"{args.prefix}-default-closed"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw",
            vpc_id=self.vpc.id,
            tags={"Name": f"{args.prefix}-igw"},
            opts=child,
        )

        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=self.vpc.id,
            tags={"Name": f"{args.prefix}-public"},
            opts=child,
        )
        aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )
        database_rt = aws.ec2.RouteTable(
            f"{name}-database-rt",
            vpc_id=self.vpc.id,
            tags={"Name": f"{args.prefix}-database"},
            opts=child,
        )

        def subnet(
            tier: str, index: int, zone: str, route_table: aws.ec2.RouteTable
        ) -> aws.ec2.Subnet:
            """One subnet of a tier in a zone, routed by `route_table`; never public IPs."""
            created = aws.ec2.Subnet(
                f"{name}-{tier}-{index}",
                vpc_id=self.vpc.id,
                cidr_block=ranges[tier][index],
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={"Name": f"{args.prefix}-{tier}-{zone}", "tier": tier},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-{tier}-{index}",
                subnet_id=created.id,
                route_table_id=route_table.id,
                opts=child,
            )
            return created

        self.public_subnet_ids = []
        self.app_subnet_ids = []
        self.database_subnet_ids = []
        self.app_route_table_ids = []
        nat_gateways: list[aws.ec2.NatGateway] = []
        for index, zone in enumerate(zones):
            public = subnet("public", index, zone, public_rt)
            self.public_subnet_ids.append(public.id)
            if args.nat_per_az or index == 0:
                eip = aws.ec2.Eip(
                    f"{name}-nat-{index}",
                    domain="vpc",
                    tags={"Name": f"{args.prefix}-nat-{zone}"},
                    opts=child,
                )
                nat_gateways.append(
                    aws.ec2.NatGateway(
                        f"{name}-nat-{index}",
                        allocation_id=eip.id,
                        subnet_id=public.id,
                        tags={"Name": f"{args.prefix}-nat-{zone}"},
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                    )
                )

        for index, zone in enumerate(zones):
            app_rt = aws.ec2.RouteTable(
                f"{name}-app-rt-{index}",
                vpc_id=self.vpc.id,
                tags={"Name": f"{args.prefix}-app-{zone}"},
                opts=child,
            )
            self.app_route_table_ids.append(app_rt.id)
            nat = nat_gateways[index] if args.nat_per_az else nat_gateways[0]
            aws.ec2.Route(
                f"{name}-app-default-{index}",
                route_table_id=app_rt.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=nat.id,
                opts=child,
            )
            self.app_subnet_ids.append(subnet("app", index, zone, app_rt).id)
            # The database tier has no route out of the VPC at all.
            self.database_subnet_ids.append(subnet("database", index, zone, database_rt).id)

        flow_log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=f"/{args.prefix}/vpc-flow-logs",
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        flow_log_role = aws.iam.Role(
            f"{name}-flow-logs",
            assume_role_policy=trust_policy(
                "vpc-flow-logs.amazonaws.com", source_account=args.account_id
            ),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=flow_log_role.id,
            policy=policy_document(
                [
                    Statement(
                        actions=[
                            "logs:CreateLogStream",
                            "logs:PutLogEvents",
                            "logs:DescribeLogStreams",
                        ],
                        resources=[flow_log_group.arn, flow_log_group.arn.apply(_log_streams)],
                    )
                ]
            ),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=flow_log_group.arn,
            iam_role_arn=flow_log_role.arn,
            max_aggregation_interval=60,
            opts=child,
        )

        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "public_subnet_ids": self.public_subnet_ids,
                "app_subnet_ids": self.app_subnet_ids,
                "database_subnet_ids": self.database_subnet_ids,
            }
        )


def _log_streams(log_group_arn: str) -> str:
    return f"{log_group_arn}:*"
