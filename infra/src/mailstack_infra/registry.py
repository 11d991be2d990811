"""ECR repositories the service images are pushed to."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

KEEP_IMAGES = 50


@dataclass(frozen=True)
class ImageRegistryArgs:
    """What the registry needs to know."""

    prefix: str
    images: Sequence[str]
    # ECR wildcard filters of the tags that may be pushed again (none: every tag immutable).
    mutable_tags: Sequence[str] = ()


class ImageRegistry(pulumi.ComponentResource):
    """One private, scanned repository per service image; release tags are immutable."""

    repositories: dict[str, aws.ecr.Repository]

    def __init__(
        self, name: str, args: ImageRegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:containers:ImageRegistry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.repositories = {}
        for image in args.images:
            repository = aws.ecr.Repository(
                f"{name}-{image}",
                name=f"{args.prefix}/{image}",
                image_tag_mutability=(
                    "IMMUTABLE_WITH_EXCLUSION" if args.mutable_tags else "IMMUTABLE"
                ),
                image_tag_mutability_exclusion_filters=[
                    aws.ecr.RepositoryImageTagMutabilityExclusionFilterArgs(
                        filter=tag, filter_type="WILDCARD"
                    )
                    for tag in args.mutable_tags
                ],
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                    scan_on_push=True
                ),
                encryption_configurations=[
                    aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")
                ],
                opts=child,
            )
            aws.ecr.LifecyclePolicy(
                f"{name}-{image}",
                repository=repository.name,
                policy=json.dumps(
                    {
                        "rules": [
                            {
                                "rulePriority": 1,
                                "description": f"keep the last {KEEP_IMAGES} images",
                                "selection": {
                                    "tagStatus": "any",
                                    "countType": "imageCountMoreThan",
                                    "countNumber": KEEP_IMAGES,
                                },
                                "action": {"type": "expire"},
                            }
                        ]
                    }
                ),
                opts=child,
            )
            self.repositories[image] = repository
        self.register_outputs(
            {
                f"{image}_repository_url": repo.repository_url
                for image, repo in self.repositories.items()
            }
        )

    def image(self, name: str, tag: str) -> pulumi.Output[str]:
        """The image a service runs: the digest the tag points at now, so a task definition
        never changes under ECS when a (mutable) tag is pushed again, and `pulumi up` fails
        with ECR's error while the tag has not been pushed."""
        repository = self.repositories[name]
        pushed = aws.ecr.get_image_output(
            repository_name=repository.name,
            image_tag=tag,
            opts=pulumi.InvokeOutputOptions(parent=self, depends_on=[repository]),
        )
        return pulumi.Output.concat(repository.repository_url, "@", pushed.image_digest)
