"""VPC endpoints: S3 through a gateway endpoint, the other AWS APIs through interface ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

# What the tasks and jobs call, besides S3: the queue, their secrets, the image registry (its
# API and the Docker endpoint; layers come from S3) and their logs.
INTERFACE_SERVICES = ("sqs", "secretsmanager", "ecr.api", "ecr.dkr", "logs")


@dataclass(frozen=True)
class EndpointsArgs:
    """What the endpoints need to know."""

    prefix: str
    vpc_id: pulumi.Input[str]
    region: str
    # `com.amazonaws` in the commercial partition (the partition's reverse DNS prefix).
    service_prefix: pulumi.Input[str]
    route_table_ids: Sequence[pulumi.Input[str]]
    subnet_ids: Sequence[pulumi.Input[str]]
    # None: no interface endpoints, the NAT gateway carries those calls.
    security_group_id: pulumi.Input[str] | None


class Endpoints(pulumi.ComponentResource):
    """The S3 gateway endpoint (free) always; the interface endpoints when a group is given."""

    s3: aws.ec2.VpcEndpoint
    interfaces: dict[str, aws.ec2.VpcEndpoint]

    def __init__(
        self, name: str, args: EndpointsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:network:Endpoints", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def service_name(service: str) -> pulumi.Output[str]:
            return pulumi.Output.concat(args.service_prefix, ".", args.region, ".", service)

        self.s3 = aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=args.vpc_id,
            service_name=service_name("s3"),
            vpc_endpoint_type="Gateway",
            route_table_ids=list(args.route_table_ids),
            tags={"Name": f"{args.prefix}-s3"},
            opts=child,
        )
        self.interfaces = {}
        if args.security_group_id is not None:
            for service in INTERFACE_SERVICES:
                self.interfaces[service] = aws.ec2.VpcEndpoint(
                    f"{name}-{service.replace('.', '-')}",
                    vpc_id=args.vpc_id,
                    service_name=service_name(service),
                    vpc_endpoint_type="Interface",
                    subnet_ids=list(args.subnet_ids),
                    security_group_ids=[args.security_group_id],
                    private_dns_enabled=True,
                    tags={"Name": f"{args.prefix}-{service}"},
                    opts=child,
                )
        self.register_outputs({"s3_endpoint_id": self.s3.id})
