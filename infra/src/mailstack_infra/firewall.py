"""Security groups and every traffic rule between the ALB, the services, the jobs and the stores."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

GATEWAY_PORT = 8000
POSTGRES_PORT = 5432
REDIS_PORT = 6379
HTTPS_PORT = 443
HTTP_PORT = 80
ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True)
class FirewallArgs:
    """What the firewall needs to know."""

    prefix: str
    vpc_id: pulumi.Input[str]
    https_listener: bool
    interface_endpoints: bool = False


class Firewall(pulumi.ComponentResource):
    """One security group per role; the only public ingress is the ALB's 80/443."""

    alb: aws.ec2.SecurityGroup
    gateway: aws.ec2.SecurityGroup
    processor: aws.ec2.SecurityGroup
    jobs: aws.ec2.SecurityGroup
    migrate: aws.ec2.SecurityGroup
    proxy: aws.ec2.SecurityGroup
    database: aws.ec2.SecurityGroup
    cache: aws.ec2.SecurityGroup
    endpoints: aws.ec2.SecurityGroup | None

    def __init__(
        self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:network:Firewall", name, None, opts)
        self._child = pulumi.ResourceOptions(parent=self)
        self._name = name

        def group(role: str, description: str) -> aws.ec2.SecurityGroup:
            return aws.ec2.SecurityGroup(
                f"{name}-{role}",
                vpc_id=args.vpc_id,
                description=description,
                tags={"Name": f"{args.prefix}-{role}"},
                opts=self._child,
            )

        self.alb = group("alb", "mailstack ALB: HTTP(S) from the internet")
        self.gateway = group("gateway", "mailstack gateway tasks: only from the ALB")
        self.processor = group("processor", "mailstack processor tasks: no ingress")
        self.jobs = group("jobs", "mailstack cleanup and retry Lambdas: no ingress")
        self.migrate = group("migrate", "mailstack migration task: no ingress")
        self.proxy = group("proxy", "mailstack RDS Proxy: only from the services and jobs")
        self.database = group(
            "database", "mailstack Postgres: the proxy, migrations and replica reads"
        )
        self.cache = group("cache", "mailstack Redis rate-limit counters: only from the gateway")

        public_ports = [HTTP_PORT, HTTPS_PORT] if args.https_listener else [HTTP_PORT]
        for port in public_ports:
            self._ingress(f"alb-{port}", self.alb, port, cidr=ANYWHERE)
        self._egress("alb-to-gateway", self.alb, GATEWAY_PORT, peer=self.gateway)
        self._ingress("gateway-from-alb", self.gateway, GATEWAY_PORT, peer=self.alb)

        # Tasks and jobs reach AWS APIs, ECR and the email providers over HTTPS only; the
        # primary through the proxy only.
        clients = [
            ("gateway", self.gateway),
            ("processor", self.processor),
            ("jobs", self.jobs),
            ("migrate", self.migrate),
        ]
        for role, sg in clients:
            self._egress(f"{role}-https", sg, HTTPS_PORT, cidr=ANYWHERE)
        for role, sg in clients[:3]:
            self._link(role, sg, "proxy", self.proxy, POSTGRES_PORT)
        self._link("proxy", self.proxy, "database", self.database, POSTGRES_PORT)
        # The migration task talks to the primary directly (DDL, as the master user); the
        # gateway reads from the replicas, which have no proxy.
        self._link("migrate", self.migrate, "database", self.database, POSTGRES_PORT)
        self._link("gateway", self.gateway, "database", self.database, POSTGRES_PORT)

        # Only the gateway counts rate limits; the processor and the jobs never talk to Redis.
        self._link("gateway", self.gateway, "cache", self.cache, REDIS_PORT)

        self.endpoints = None
        if args.interface_endpoints:
            self.endpoints = group(
                "endpoints", "mailstack VPC interface endpoints: HTTPS from the app tier"
            )
            for role, sg in clients:
                self._ingress(f"endpoints-from-{role}", self.endpoints, HTTPS_PORT, peer=sg)

        self.register_outputs(
            {
                "alb_security_group_id": self.alb.id,
                "gateway_security_group_id": self.gateway.id,
                "processor_security_group_id": self.processor.id,
                "jobs_security_group_id": self.jobs.id,
                "migrate_security_group_id": self.migrate.id,
                "proxy_security_group_id": self.proxy.id,
                "database_security_group_id": self.database.id,
                "cache_security_group_id": self.cache.id,
            }
        )

    def _link(
        self,
        client: str,
        client_sg: aws.ec2.SecurityGroup,
        server: str,
        server_sg: aws.ec2.SecurityGroup,
        port: int,
    ) -> None:
        """Let `client` open TCP connections to `server` on `port`: its egress, their ingress."""
        self._egress(f"{client}-to-{server}", client_sg, port, peer=server_sg)
        self._ingress(f"{server}-from-{client}", server_sg, port, peer=client_sg)

    def _ingress(
        self,
        rule: str,
        sg: aws.ec2.SecurityGroup,
        port: int,
        *,
        cidr: str | None = None,
        peer: aws.ec2.SecurityGroup | None = None,
    ) -> None:
        self._rule(aws.vpc.SecurityGroupIngressRule, rule, sg, port, cidr, peer)

    def _egress(
        self,
        rule: str,
        sg: aws.ec2.SecurityGroup,
        port: int,
        *,
        cidr: str | None = None,
        peer: aws.ec2.SecurityGroup | None = None,
    ) -> None:
        self._rule(aws.vpc.SecurityGroupEgressRule, rule, sg, port, cidr, peer)

    def _rule(
        self,
        kind: type[aws.vpc.SecurityGroupIngressRule] | type[aws.vpc.SecurityGroupEgressRule],
        rule: str,
        sg: aws.ec2.SecurityGroup,
        port: int,
        cidr: str | None,
        peer: aws.ec2.SecurityGroup | None,
    ) -> None:
        """One TCP port, from/to either a CIDR or another security group."""
        kind(
            f"{self._name}-{rule}",
            security_group_id=sg.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            cidr_ipv4=cidr,
            referenced_security_group_id=peer.id if peer is not None else None,
            description=rule,
            opts=self._child,
        )
