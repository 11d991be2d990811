"""A private S3 bucket: owner-enforced, public access blocked, encrypted, versioned, TLS only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

LifecycleRule = aws.s3.BucketLifecycleConfigurationRuleArgs


@dataclass(frozen=True)
class PrivateBucketArgs:
    """What a private bucket needs to know.

    `sse_algorithm` is `aws:kms` (AWS-managed key, bucket key on) unless a service that writes to
    the bucket only supports S3-managed keys (ALB access logs need `AES256`).
    """

    bucket_name: pulumi.Input[str]
    lifecycle_rules: Sequence[LifecycleRule]
    sse_algorithm: str = "aws:kms"
    extra_policy_statements: Sequence[pulumi.Input[dict[str, Any]]] = field(default_factory=list)
    # protect + retain_on_delete on the bucket (production data).
    protect: bool = False


class PrivateBucket(pulumi.ComponentResource):
    """A bucket nobody outside the account can read, and nobody can reach without TLS."""

    bucket: aws.s3.Bucket
    policy: aws.s3.BucketPolicy

    def __init__(
        self, name: str, args: PrivateBucketArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:storage:PrivateBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.bucket = aws.s3.Bucket(
            name,
            bucket=args.bucket_name,
            opts=pulumi.ResourceOptions(
                parent=self, protect=args.protect, retain_on_delete=args.protect
            ),
        )
        aws.s3.BucketOwnershipControls(
            name,
            bucket=self.bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        public_access_block = aws.s3.BucketPublicAccessBlock(
            name,
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            name,
            bucket=self.bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm=args.sse_algorithm
                    ),
                    bucket_key_enabled=args.sse_algorithm == "aws:kms",
                )
            ],
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            name,
            bucket=self.bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                status="Enabled"
            ),
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            name,
            bucket=self.bucket.id,
            rules=list(args.lifecycle_rules),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        deny_plain_http = self.bucket.arn.apply(
            lambda arn: {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        )
        self.policy = aws.s3.BucketPolicy(
            name,
            bucket=self.bucket.id,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [deny_plain_http, *args.extra_policy_statements],
                }
            ),
            # A policy put before the public access block exists can be rejected as public.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access_block]),
        )

        self.register_outputs({"bucket_name": self.bucket.bucket, "bucket_arn": self.bucket.arn})


def expire_after(days: int) -> LifecycleRule:
    """A lifecycle rule that deletes objects (and old versions) after a number of days."""
    return LifecycleRule(
        id="expire",
        status="Enabled",
        filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
        expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=days),
        noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
            noncurrent_days=7
        ),
        abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
            days_after_initiation=7
        ),
    )


def archive_to_glacier(after_days: int, expire_after_days: int) -> LifecycleRule:
    """A lifecycle rule that moves objects to Glacier, then deletes them per the compliance term."""
    return LifecycleRule(
        id="archive-then-expire",
        status="Enabled",
        filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
        transitions=[
            aws.s3.BucketLifecycleConfigurationRuleTransitionArgs(
                days=after_days, storage_class="GLACIER"
            )
        ],
        expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=expire_after_days),
        noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
            noncurrent_days=30
        ),
        abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
            days_after_initiation=7
        ),
    )
