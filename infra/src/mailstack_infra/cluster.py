"""The ECS cluster both Fargate services run in."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws


class Cluster(pulumi.ComponentResource):
    """An ECS cluster with Container Insights, whose task counts drive the processor's scaling."""

    cluster: aws.ecs.Cluster

    def __init__(self, name: str, prefix: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mailstack:containers:Cluster", name, None, opts)
        self.cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            name=prefix,
            settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"cluster_name": self.cluster.name, "cluster_arn": self.cluster.arn})
